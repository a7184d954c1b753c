use proto::directory::v1::directory_service_server::DirectoryServiceServer;
use proto::importer::v1::importer_service_server::ImporterServiceServer;
use proto::registry::v1::registry_service_server::RegistryServiceServer;
use tokio_stream::StreamExt as _;
use tonic::server::NamedService;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::{v1, v1alpha};

use crate::helpers::EndToEnd;

async fn channel(url: &str) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(url.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

async fn services_v1(url: &str) -> Vec<String> {
    let mut client = v1::server_reflection_client::ServerReflectionClient::new(channel(url).await);
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::once(request))
        .await
        .unwrap()
        .into_inner();
    match responses
        .next()
        .await
        .unwrap()
        .unwrap()
        .message_response
        .unwrap()
    {
        v1::server_reflection_response::MessageResponse::ListServicesResponse(list) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected reflection answer {other:?}"),
    }
}

async fn services_v1alpha(url: &str) -> Vec<String> {
    let mut client =
        v1alpha::server_reflection_client::ServerReflectionClient::new(channel(url).await);
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::once(request))
        .await
        .unwrap()
        .into_inner();
    match responses
        .next()
        .await
        .unwrap()
        .unwrap()
        .message_response
        .unwrap()
    {
        v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected reflection answer {other:?}"),
    }
}

async fn serving(url: &str, service: &str) -> ServingStatus {
    let mut client = HealthClient::new(channel(url).await);
    client
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .unwrap()
        .into_inner()
        .status()
}

test_support::on_both_backends! {
    async fn every_service_serves_health_and_reflection_in_both_versions(db) {
        let e2e = EndToEnd::start(&db, 3).await;
        let services = [
            (e2e.stack.directory_url.clone(), <DirectoryServiceServer<()> as NamedService>::NAME),
            (e2e.stack.registry_url.clone(), <RegistryServiceServer<()> as NamedService>::NAME),
            (e2e.stack.importer_url.clone(), <ImporterServiceServer<()> as NamedService>::NAME),
        ];
        for (url, name) in services {
            assert_eq!(serving(&url, "").await, ServingStatus::Serving);
            assert_eq!(serving(&url, name).await, ServingStatus::Serving);
            for listed in [services_v1(&url).await, services_v1alpha(&url).await] {
                assert!(listed.iter().any(|s| s == name), "{name} not in {listed:?}");
                assert!(listed.iter().any(|s| s == "grpc.health.v1.Health"), "{listed:?}");
            }
        }
    }

    async fn each_port_advertises_only_its_service_and_answers_others_unimplemented(db) {
        let e2e = EndToEnd::start(&db, 3).await;
        let names = [
            <DirectoryServiceServer<()> as NamedService>::NAME,
            <RegistryServiceServer<()> as NamedService>::NAME,
            <ImporterServiceServer<()> as NamedService>::NAME,
        ];
        let urls = [e2e.stack.directory_url.clone(), e2e.stack.registry_url.clone(), e2e.stack.importer_url.clone()];
        for (url, own) in urls.iter().zip(names) {
            for listed in [services_v1(url).await, services_v1alpha(url).await] {
                for other in names.iter().filter(|n| **n != own) {
                    assert!(!listed.iter().any(|s| s == other), "{url} advertises {other}: {listed:?}");
                }
                assert!(listed.iter().any(|s| s == own), "{listed:?}");
            }
        }
        use proto::directory::v1 as directory_pb;
        use proto::importer::v1 as importer_pb;
        use proto::registry::v1 as registry_pb;
        let [directory_url, registry_url, importer_url] = urls;
        let status = registry_pb::registry_service_client::RegistryServiceClient::new(channel(&importer_url).await)
            .list_companies(registry_pb::ListCompaniesRequest {})
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
        let status = importer_pb::importer_service_client::ImporterServiceClient::new(channel(&directory_url).await)
            .list_jobs(importer_pb::ListJobsRequest::default())
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
        let status = directory_pb::directory_service_client::DirectoryServiceClient::new(channel(&registry_url).await)
            .list_groups(directory_pb::ListGroupsRequest::default())
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
    }
}
