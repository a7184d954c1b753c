//! The admin commands: each talks to the services over gRPC, exactly as against a deployment.

use anyhow::Context as _;
use proto::directory::v1 as directory_pb;
use proto::directory::v1::directory_service_client::DirectoryServiceClient;
use proto::importer::v1 as importer_pb;
use proto::importer::v1::importer_service_client::ImporterServiceClient;
use proto::registry::v1 as registry_pb;
use proto::registry::v1::registry_service_client::RegistryServiceClient;
use serde::Serialize;
use service_runtime::auth::AuthedChannel;

use crate::output::{Format, Record, note, print, yes_no};

mod directory;
mod import;
mod jobs;
mod users;

pub use directory::*;
pub use import::*;
pub use jobs::*;
pub use users::*;

/// Where the services are, and how this CLI proves who it is.
#[derive(Debug, Clone, Default)]
pub struct Endpoints {
    pub directory: String,
    pub registry: String,
    pub importer: String,
    /// Who the commands act for where the services run in insecure development mode (sent as
    /// `x-userimport-principal`; ignored by services that verify tokens).
    pub principal: String,
    /// The bearer token sent with every call.
    pub token: Option<secrecy::SecretString>,
    /// TLS towards the services (`https://` URLs).
    pub tls: service_runtime::tls::ClientTls,
}

impl Endpoints {
    /// A request for `message` (credentials are added to every call by the channel).
    pub(crate) fn request<T>(&self, message: T) -> tonic::Request<T> {
        tonic::Request::new(message)
    }

    /// A connected channel to `url` with this CLI's credentials on every call.
    async fn channel(&self, url: &str, service: &str) -> anyhow::Result<AuthedChannel> {
        let endpoint = tonic::transport::Endpoint::from_shared(url.to_owned())
            .with_context(|| format!("invalid {service} URL {url}"))?
            .connect_timeout(std::time::Duration::from_secs(5))
            .timeout(service_runtime::grpc::CALL_TIMEOUT);
        let endpoint = service_runtime::tls::configure_endpoint(endpoint, &self.tls)?;
        let channel = endpoint.connect().await.with_context(|| {
            format!("cannot reach {service} at {url} (is `userimport dev` running?)")
        })?;
        let source = match &self.token {
            Some(token) => service_runtime::auth::TokenSource::inline(token.clone()),
            None => service_runtime::auth::TokenSource::default(),
        };
        let outbound =
            service_runtime::auth::Outbound::new(&source)?.with_principal(&self.principal);
        Ok(tonic::service::interceptor::InterceptedService::new(
            channel, outbound,
        ))
    }

    pub(crate) async fn directory(&self) -> anyhow::Result<DirectoryServiceClient<AuthedChannel>> {
        Ok(DirectoryServiceClient::new(
            self.channel(&self.directory, "directory-sync").await?,
        ))
    }

    pub(crate) async fn registry(&self) -> anyhow::Result<RegistryServiceClient<AuthedChannel>> {
        Ok(RegistryServiceClient::new(
            self.channel(&self.registry, "user-registry").await?,
        ))
    }

    pub(crate) async fn importer(&self) -> anyhow::Result<ImporterServiceClient<AuthedChannel>> {
        Ok(ImporterServiceClient::new(
            self.channel(&self.importer, "import-worker").await?,
        ))
    }
}

/// Turns a failed call into an error that says what failed, with the service's message.
pub fn failed(what: &'static str) -> impl FnOnce(tonic::Status) -> anyhow::Error {
    move |status| {
        let hint = match status.code() {
            tonic::Code::Unauthenticated => {
                "\nhint: the CLI sends the token in --token-file / USERIMPORT_TOKEN_FILE, \
                 USERIMPORT_TOKEN, ./.userimport/admin.token, or the one the last \
                 `userimport dev` noted in your profile"
            }
            tonic::Code::PermissionDenied => {
                "\nhint: your token's roles do not allow this (readers may only read)"
            }
            _ => "",
        };
        anyhow::anyhow!(
            "{what} failed ({:?}): {}{hint}",
            status.code(),
            status.message()
        )
    }
}
