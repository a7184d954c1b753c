//! Calls a round makes to the services it writes to (user-registry, import-worker). Services
//! start in any order, so a round (the first one runs at start-up) retries a peer that is not
//! answering yet, with exponential backoff and jitter, for a bounded time.

use std::future::Future;
use std::time::{Duration, Instant};

/// First pause between attempts; it doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(200);
const MAX_PAUSE: Duration = Duration::from_secs(10);

/// Calls `call` until it succeeds, fails with a status that retrying cannot help
/// (`service_runtime::grpc::is_retryable`), or `max_elapsed` has passed; answers the last
/// outcome. Only for idempotent calls (every call a round makes carries its run id). `service`
/// names the peer in the logs.
pub(crate) async fn retrying<T, F, Fut>(
    service: &'static str,
    max_elapsed: Duration,
    mut call: F,
) -> Result<T, tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    let started = Instant::now();
    let mut pause = FIRST_PAUSE;
    let mut attempt: u32 = 1;
    loop {
        match call().await {
            Err(status)
                if service_runtime::grpc::is_retryable(&status)
                    && started.elapsed() + pause < max_elapsed =>
            {
                let wait = jittered(pause);
                tracing::warn!(
                    service,
                    attempt,
                    code = ?status.code(),
                    message = status.message(),
                    retry_in_ms = wait.as_millis() as u64,
                    "peer unavailable; retrying"
                );
                tokio::time::sleep(wait).await;
                pause = (pause * 2).min(MAX_PAUSE);
                attempt += 1;
            }
            outcome => return outcome,
        }
    }
}

/// `pause` scaled by a random factor between 0.5 and 1.5, so that callers that failed together
/// do not retry together.
fn jittered(pause: Duration) -> Duration {
    let random = (uuid::Uuid::new_v4().as_u128() % 1000) as f64 / 1000.0;
    pause.mul_f64(0.5 + random)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_half_and_one_and_a_half_of_the_pause() {
        for _ in 0..200 {
            let wait = jittered(Duration::from_millis(1000));
            assert!(wait >= Duration::from_millis(500) && wait <= Duration::from_millis(1500));
        }
    }
}
