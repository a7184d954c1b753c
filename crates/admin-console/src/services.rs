//! The three services, called as the signed-in person: one lazily connected channel each,
//! and that person's token (or, in insecure development mode, name) on every call. The
//! console holds no credentials of its own.

use std::time::Duration;

use proto::directory::v1::directory_service_client::DirectoryServiceClient;
use proto::importer::v1::importer_service_client::ImporterServiceClient;
use proto::registry::v1::registry_service_client::RegistryServiceClient;
use service_runtime::auth::{AuthedChannel, Outbound, TokenSource};
use tonic::transport::{Channel, Endpoint};

use crate::config::Config;
use crate::session::Person;
use crate::web::PageError;

pub(crate) struct Services {
    directory: Channel,
    registry: Channel,
    importer: Channel,
}

fn channel(url: &str, config: &Config) -> anyhow::Result<Channel> {
    use anyhow::Context as _;
    let endpoint = Endpoint::from_shared(url.to_owned())
        .with_context(|| format!("invalid service URL {url}"))?
        .connect_timeout(Duration::from_secs(5))
        // A page waits no longer than this for a service; streams (job progress) are
        // bounded by their own end.
        .timeout(Duration::from_secs(30))
        .tcp_nodelay(true);
    Ok(service_runtime::tls::configure_endpoint(endpoint, &config.client_tls)?.connect_lazy())
}

impl Services {
    pub(crate) fn new(config: &Config) -> anyhow::Result<Self> {
        Ok(Self {
            directory: channel(&config.directory_url, config)?,
            registry: channel(&config.registry_url, config)?,
            importer: channel(&config.importer_url, config)?,
        })
    }

    fn as_person(channel: &Channel, person: &Person) -> Result<AuthedChannel, PageError> {
        let outbound = Outbound::new(&TokenSource {
            token: person.token.clone(),
            token_file: None,
        })
        .map_err(PageError::Internal)?
        .with_principal(&person.principal);
        Ok(tonic::service::interceptor::InterceptedService::new(
            channel.clone(),
            outbound,
        ))
    }

    pub(crate) fn directory(
        &self,
        person: &Person,
    ) -> Result<DirectoryServiceClient<AuthedChannel>, PageError> {
        Ok(DirectoryServiceClient::new(Self::as_person(
            &self.directory,
            person,
        )?))
    }

    pub(crate) fn registry(
        &self,
        person: &Person,
    ) -> Result<RegistryServiceClient<AuthedChannel>, PageError> {
        Ok(RegistryServiceClient::new(Self::as_person(
            &self.registry,
            person,
        )?))
    }

    pub(crate) fn importer(
        &self,
        person: &Person,
    ) -> Result<ImporterServiceClient<AuthedChannel>, PageError> {
        Ok(ImporterServiceClient::new(Self::as_person(
            &self.importer,
            person,
        )?))
    }
}
