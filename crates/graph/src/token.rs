//! Access-token caching: one token shared by all calls, refreshed ahead of expiry.

use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Mutex;

use crate::Error;

/// Longest head start for refreshing a token before it expires.
const MAX_REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);

/// A token fresh from the token endpoint.
pub(crate) struct AcquiredToken {
    pub(crate) access_token: SecretString,
    /// `expires_in` of the answer.
    pub(crate) lifetime: Duration,
    /// When the request was sent, so the expiry errs on the early side.
    pub(crate) requested_at: Instant,
}

struct CachedToken {
    access_token: SecretString,
    refresh_at: Instant,
    expires_at: Instant,
}

impl CachedToken {
    /// Schedules the refresh for when less than min(5 min, half the lifetime) remains.
    fn new(token: AcquiredToken) -> Self {
        let margin = MAX_REFRESH_MARGIN.min(token.lifetime / 2);
        Self {
            access_token: token.access_token,
            refresh_at: token.requested_at + (token.lifetime - margin),
            expires_at: token.requested_at + token.lifetime,
        }
    }

    fn needs_refresh(&self, now: Instant) -> bool {
        now >= self.refresh_at
    }

    fn is_expired(&self, now: Instant) -> bool {
        now >= self.expires_at
    }
}

/// Holds the current token; concurrent callers wait for one shared refresh.
#[derive(Default)]
pub(crate) struct TokenCache {
    current: Mutex<Option<CachedToken>>,
}

impl TokenCache {
    /// Returns the cached token, or calls `fetch` once (holding the lock) to replace it.
    ///
    /// If the refresh fails while the old token has not expired yet, the old token is used.
    pub(crate) async fn get<F, Fut>(&self, fetch: F) -> Result<SecretString, Error>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<AcquiredToken, Error>>,
    {
        let mut current = self.current.lock().await;
        if let Some(token) = current.as_ref()
            && !token.needs_refresh(Instant::now())
        {
            return Ok(token.access_token.clone());
        }
        match fetch().await {
            Ok(acquired) => {
                let token = CachedToken::new(acquired);
                let access_token = token.access_token.clone();
                *current = Some(token);
                Ok(access_token)
            }
            Err(error) => match current.as_ref() {
                // Never fall back to a token Graph refused (`invalidate` removed it).
                Some(token) if !token.is_expired(Instant::now()) => {
                    tracing::warn!(error = %error, "token refresh failed, using the current token until it expires");
                    Ok(token.access_token.clone())
                }
                _ => Err(error),
            },
        }
    }
}

impl TokenCache {
    /// Forgets `used` if it is still the cached token (Graph refused it with 401), so the next
    /// `get` fetches a new one. Callers that saw the same refusal share that one refresh.
    pub(crate) async fn invalidate(&self, used: &SecretString) {
        let mut current = self.current.lock().await;
        if current
            .as_ref()
            .is_some_and(|token| token.access_token.expose_secret() == used.expose_secret())
        {
            *current = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acquired(lifetime: Duration, requested_at: Instant) -> AcquiredToken {
        AcquiredToken {
            access_token: SecretString::from("t".to_owned()),
            lifetime,
            requested_at,
        }
    }

    #[test]
    fn an_hour_token_is_refreshed_five_minutes_before_expiry() {
        let start = Instant::now();
        let token = CachedToken::new(acquired(Duration::from_secs(3599), start));
        assert!(!token.needs_refresh(start + Duration::from_secs(3599 - 301)));
        assert!(token.needs_refresh(start + Duration::from_secs(3599 - 300)));
    }

    #[test]
    fn a_short_token_is_refreshed_at_half_its_lifetime() {
        let start = Instant::now();
        let token = CachedToken::new(acquired(Duration::from_secs(2), start));
        assert!(!token.needs_refresh(start + Duration::from_millis(999)));
        assert!(token.needs_refresh(start + Duration::from_secs(1)));
        assert!(!token.is_expired(start + Duration::from_millis(1_999)));
        assert!(token.is_expired(start + Duration::from_secs(2)));
    }

    #[tokio::test]
    async fn an_invalidated_token_is_replaced_once_and_never_reused() {
        let cache = TokenCache::default();
        let first = cache
            .get(|| async { Ok(acquired(Duration::from_secs(3600), Instant::now())) })
            .await
            .unwrap();
        cache.invalidate(&first).await;
        // A refresh that fails now does not fall back to the refused token.
        let failed = cache
            .get(|| async { Err(Error::Decode("down".to_owned())) })
            .await;
        assert!(failed.is_err());
        let second = cache
            .get(|| async {
                Ok(AcquiredToken {
                    access_token: SecretString::from("t2".to_owned()),
                    lifetime: Duration::from_secs(3600),
                    requested_at: Instant::now(),
                })
            })
            .await
            .unwrap();
        assert_eq!(second.expose_secret(), "t2");
        // A late invalidation of the old token leaves the new one alone.
        cache.invalidate(&first).await;
        let third = cache
            .get(|| async { Err(Error::Decode("unused".to_owned())) })
            .await
            .unwrap();
        assert_eq!(third.expose_secret(), "t2");
    }

    #[tokio::test]
    async fn a_failed_refresh_keeps_using_an_unexpired_token() {
        let cache = TokenCache::default();
        let now = Instant::now();
        // Lifetime 10 min: refreshing starts after 5 min; pretend it was issued 6 min ago.
        let issued = now.checked_sub(Duration::from_secs(360)).unwrap();
        cache
            .get(|| async { Ok(acquired(Duration::from_secs(600), issued)) })
            .await
            .unwrap();
        let token = cache
            .get(|| async { Err(Error::Decode("token endpoint down".to_owned())) })
            .await;
        assert!(token.is_ok());
    }
}
