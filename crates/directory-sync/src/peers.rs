//! Calls a round makes to the services it writes to (user-registry, import-worker). Services
//! start in any order, so a round (the first one runs at start-up) retries a peer that is not
//! answering yet, with the shared retry policy (exponential backoff, full jitter, the peer's
//! `RetryInfo` as a floor), for a bounded time.

use std::future::Future;
use std::time::Duration;

use service_runtime::retry::RetryPolicy;

/// Longest pause between two attempts.
const MAX_PAUSE: Duration = Duration::from_secs(10);

/// Calls `call` until it succeeds, fails with a status that retrying cannot help
/// (`service_runtime::error::is_retryable`), or `max_elapsed` has passed; answers the last
/// outcome. Only for idempotent calls (every call a round makes carries its run id). `service`
/// names the peer in the logs.
pub(crate) async fn retrying<T, F, Fut>(
    service: &'static str,
    max_elapsed: Duration,
    call: F,
) -> Result<T, tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    let policy = RetryPolicy {
        max_delay: MAX_PAUSE,
        ..RetryPolicy::patient(max_elapsed)
    };
    let retried = policy.run(
        call,
        service_runtime::error::is_retryable,
        service_runtime::error::retry_delay,
    );
    tracing::Instrument::instrument(retried, tracing::info_span!("peer", service)).await
}
