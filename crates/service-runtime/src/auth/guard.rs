//! The guard in front of a service's routes: authenticates, applies the RPC's access rule,
//! and hands the principal to the handler.

use super::*;

/// Paths open to everyone: health probes and reflection.
pub(super) fn is_open(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/") || path.starts_with("/grpc.reflection.")
}

/// Authenticates and authorizes every call of a server: a tower layer.
#[derive(Clone)]
pub struct Guard {
    authenticator: Arc<Authenticator>,
    rules: Arc<HashMap<&'static str, &'static [&'static str]>>,
    /// The services (`/package.Service/`) the rules are for: this server's own.
    served: Arc<BTreeSet<&'static str>>,
}

/// The service part of an RPC path, with its slashes: `/package.Service/`.
pub(super) fn service_of(path: &str) -> Option<&str> {
    let end = path.get(1..)?.find('/')? + 2;
    path.get(..end)
}

impl Guard {
    pub fn new(authenticator: Authenticator, rules: AccessRules) -> Self {
        Self {
            authenticator: Arc::new(authenticator),
            rules: Arc::new(rules.iter().copied().collect()),
            served: Arc::new(
                rules
                    .iter()
                    .filter_map(|(path, _)| service_of(path))
                    .collect(),
            ),
        }
    }

    /// True when `path` belongs to a service this server does not serve: the router answers
    /// `UNIMPLEMENTED` for it, touching no data, so the guard lets it through (refusing it
    /// would suggest the service exists here and the caller merely lacks a role). A method
    /// of this server's own services without a rule is still refused.
    pub(super) fn is_foreign(&self, path: &str) -> bool {
        service_of(path).is_none_or(|service| !self.served.contains(service))
    }

    pub(super) async fn admit(
        &self,
        path: &str,
        headers: &http::HeaderMap,
    ) -> Result<Principal, Status> {
        let principal = self.authenticator.authenticate(headers).await?;
        let Some(roles) = self.rules.get(path) else {
            tracing::warn!(path, "an RPC without an access rule was refused");
            return Err(Status::permission_denied(format!(
                "{path} has no access rule"
            )));
        };
        if principal.has_any(roles) {
            Ok(principal)
        } else {
            Err(Status::permission_denied(format!(
                "{} may not call {path} (needs one of: {})",
                principal.name,
                roles.join(", ")
            )))
        }
    }
}

impl<S> tower::Layer<S> for Guard {
    type Service = Guarded<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Guarded {
            inner,
            guard: self.clone(),
        }
    }
}

/// A service behind a [`Guard`].
#[derive(Clone)]
pub struct Guarded<S> {
    inner: S,
    guard: Guard,
}

impl<S, B, R> tower::Service<http::Request<B>> for Guarded<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The clone that was driven to readiness serves this call (tower's rule).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let guard = self.guard.clone();
        Box::pin(async move {
            let path = request.uri().path().to_owned();
            if is_open(&path) || guard.is_foreign(&path) {
                return inner.call(request).await;
            }
            match guard.admit(&path, request.headers()).await {
                Ok(principal) => {
                    request.extensions_mut().insert(principal);
                    inner.call(request).await
                }
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}
