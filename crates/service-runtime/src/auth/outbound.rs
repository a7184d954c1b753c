//! Calling other services: the token this service presents, cached and refreshed.

use super::*;

/// Adds this side's credentials to every outgoing call — the bearer token, and in insecure
/// development mode the principal header — and the current trace context. A tonic
/// interceptor.
#[derive(Clone, Default)]
pub struct Outbound {
    token: Option<Arc<CachedToken>>,
    principal: Option<MetadataValue<tonic::metadata::Ascii>>,
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbound")
            .field("token", &self.token.as_ref().map(|_| "[redacted]"))
            .finish_non_exhaustive()
    }
}

/// A token, from configuration or a file read again when it changes.
pub(super) struct CachedToken {
    inline: Option<SecretString>,
    file: Option<PathBuf>,
    cached: Mutex<Option<(SystemTime, MetadataValue<tonic::metadata::Ascii>)>>,
}

impl Outbound {
    /// Credentials from `source`; none when it is not set.
    pub fn new(source: &TokenSource) -> anyhow::Result<Self> {
        if source.token.is_some() && source.token_file.is_some() {
            anyhow::bail!("give the outbound token inline or as a file, not both");
        }
        let token = source.is_set().then(|| {
            Arc::new(CachedToken {
                inline: source.token.clone(),
                file: source.token_file.clone(),
                cached: Mutex::new(None),
            })
        });
        if let Some(token) = &token {
            // A missing or unreadable file is a start-up error, not a surprise later.
            token.header()?;
        }
        Ok(Self {
            token,
            principal: None,
        })
    }

    /// Also claims `name` in the principal header (honoured in insecure development mode).
    pub fn with_principal(mut self, name: &str) -> Self {
        self.principal = name.parse().ok();
        self
    }
}

impl CachedToken {
    pub(super) fn header(&self) -> anyhow::Result<MetadataValue<tonic::metadata::Ascii>> {
        if let Some(token) = &self.inline {
            let mut value: MetadataValue<_> = format!("Bearer {}", token.expose_secret())
                .parse()
                .context("the token is not valid header text")?;
            value.set_sensitive(true);
            return Ok(value);
        }
        let file = self.file.as_ref().context("no token configured")?;
        let modified = std::fs::metadata(file)
            .and_then(|m| m.modified())
            .with_context(|| format!("cannot read the token file {}", file.display()))?;
        let mut cached = self
            .cached
            .lock()
            .map_err(|_| anyhow::anyhow!("token cache poisoned"))?;
        if let Some((at, value)) = cached.as_ref()
            && *at == modified
        {
            return Ok(value.clone());
        }
        let token = read_token_file(file)?;
        let mut value: MetadataValue<_> = format!("Bearer {}", token.expose_secret())
            .parse()
            .context("the token file does not hold valid header text")?;
        value.set_sensitive(true);
        *cached = Some((modified, value.clone()));
        Ok(value)
    }
}

impl tonic::service::Interceptor for Outbound {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        crate::trace::inject_into(request.metadata_mut());
        if let Some(token) = &self.token {
            let value = token.header().map_err(|error| {
                tracing::error!(
                    error = format!("{error:#}"),
                    "cannot read the outbound token"
                );
                Status::unauthenticated("this service's own token cannot be read")
            })?;
            request.metadata_mut().insert("authorization", value);
        }
        if let Some(principal) = &self.principal {
            request
                .metadata_mut()
                .insert(PRINCIPAL_HEADER, principal.clone());
        }
        Ok(request)
    }
}

/// A channel to another service with this side's credentials on every call.
pub type AuthedChannel =
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Outbound>;

/// A random token of 32 bytes, URL-safe base64 (for `userimport dev`'s local tokens).
pub fn random_token() -> anyhow::Result<SecretString> {
    use base64::Engine as _;
    use ring::rand::SecureRandom as _;
    let mut bytes = [0_u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("no system randomness"))?;
    Ok(SecretString::from(
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes),
    ))
}

/// Every RPC declared for `service` (full name, `userimport.registry.v1.RegistryService`) in
/// the descriptor set, as paths `/service/Method`.
pub fn declared_rpcs(service: &str) -> anyhow::Result<Vec<String>> {
    use prost::Message as _;
    let set = prost_types::FileDescriptorSet::decode(proto::FILE_DESCRIPTOR_SET)
        .context("the descriptor set does not decode")?;
    let mut paths = Vec::new();
    for file in &set.file {
        for s in &file.service {
            let full = format!("{}.{}", file.package(), s.name());
            if full == service {
                paths.extend(s.method.iter().map(|m| format!("/{full}/{}", m.name())));
            }
        }
    }
    anyhow::ensure!(!paths.is_empty(), "no service {service} is declared");
    Ok(paths)
}
