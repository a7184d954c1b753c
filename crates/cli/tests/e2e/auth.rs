//! Issue 6: nobody gets in where they don't belong, and no secret leaks. The three services
//! verify OIDC access tokens minted by a second Graph emulator acting as the tenant's identity
//! provider (its JWKS endpoint is what a real tenant publishes); the services call each other
//! with service-identity tokens from the same provider.

use std::sync::{Arc, Mutex};

use cli::stack::{
    DirectorySource, LocalTokens, Ports, ServiceAuth, Stack, StackAuth, StackOptions, Storage,
};
use graph_emulator::{AccessTokenSpec, Emulator, EmulatorConfig, SigningKey};
use proto::directory::v1 as directory_pb;
use proto::importer::v1 as importer_pb;
use proto::registry::v1 as registry_pb;
use secrecy::ExposeSecret as _;
use service_runtime::auth::{
    ADMIN, AuthConfig, DIRECTORY_SYNC, IMPORT_WORKER, OidcConfig, READER, TokenSource,
};
use tonic::Code;
use tonic::transport::Channel;

pub(crate) const AUDIENCE: &str = "api://userimport";

/// The tenant's identity provider (an emulator that serves nothing else here).
pub(crate) async fn identity_provider() -> Emulator {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    Emulator::start(EmulatorConfig::synthetic(1), listener)
        .await
        .unwrap()
}

pub(crate) fn spec(subject: &str, roles: &[&str]) -> AccessTokenSpec {
    AccessTokenSpec {
        subject: subject.to_owned(),
        username: subject.to_owned(),
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        audience: AUDIENCE.to_owned(),
        issuer: None,
        expires_in: 3600,
        key: SigningKey::Rsa1,
    }
}

pub(crate) fn oidc_config(idp: &Emulator, outbound: Option<String>) -> AuthConfig {
    AuthConfig {
        oidc: Some(OidcConfig {
            issuers: vec![idp.issuer()],
            audiences: vec![AUDIENCE.to_owned()],
            jwks_url: Some(idp.jwks_url()),
            leeway_seconds: 5,
            jwks_min_refetch_seconds: 0,
            // The emulator serves plain HTTP on 127.0.0.1.
            allow_http_loopback: true,
            ..OidcConfig::default()
        }),
        outbound: outbound
            .map(|t| TokenSource::inline(t.into()))
            .unwrap_or_default(),
        ..AuthConfig::default()
    }
}

/// The same, finding the keys from the issuer's discovery document.
fn discovering_oidc_config(idp: &Emulator, outbound: Option<String>) -> AuthConfig {
    let mut config = oidc_config(idp, outbound);
    if let Some(oidc) = config.oidc.as_mut() {
        oidc.jwks_url = None;
    }
    config
}

/// The three services on SQLite in a temporary folder, trusting `idp`.
pub(crate) async fn stack_trusting(idp: &Emulator, users: usize) -> (Stack, std::path::PathBuf) {
    let dir =
        std::env::temp_dir().join(format!("userimport-auth-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let worker_token = idp
        .sign_access_token(&spec("import-worker", &[IMPORT_WORKER]))
        .unwrap();
    let sync_token = idp
        .sign_access_token(&spec("directory-sync", &[DIRECTORY_SYNC]))
        .unwrap();
    let stack = Stack::start(StackOptions {
        storage: Storage::Sqlite(dir.clone()),
        directory: DirectorySource::Emulator { users },
        ports: Ports::ANY,
        companies: Vec::new(),
        chunk_size: 50,
        auth: StackAuth::Custom(Box::new(ServiceAuth {
            registry: oidc_config(idp, None),
            directory: discovering_oidc_config(idp, Some(sync_token)),
            importer: oidc_config(idp, Some(worker_token)),
        })),
        auto_import: false,
        // Engineering: every user of a tenant this small, through a nested group.
        sync_groups: vec![graph_emulator::SYNTHETIC_GROUP_IDS[1].to_owned()],
        delta_interval_secs: 0,
        console: None,
    })
    .await
    .unwrap();
    (stack, dir)
}

async fn channel(url: &str) -> Channel {
    Channel::from_shared(url.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// A request carrying `token` (or none).
fn with_token<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request
}

/// Starts a round with `token` and follows it to its end with `watcher`'s token: the ended run.
async fn round_to_end(
    client: &mut directory_pb::directory_service_client::DirectoryServiceClient<Channel>,
    mode: directory_pb::SyncMode,
    token: &str,
    watcher: &str,
) -> directory_pb::SyncRun {
    let request = directory_pb::SyncNowRequest {
        mode: mode.into(),
        ..Default::default()
    };
    let run = client
        .sync_now(with_token(request, Some(token)))
        .await
        .unwrap()
        .into_inner()
        .run
        .unwrap();
    let watch = directory_pb::WatchSyncRunRequest { run_id: run.run_id };
    let mut stream = client
        .watch_sync_run(with_token(watch, Some(watcher)))
        .await
        .unwrap()
        .into_inner();
    let mut last = None;
    while let Some(update) = stream.message().await.unwrap() {
        last = update.run;
    }
    last.unwrap()
}

/// Calls any RPC by path with an empty message; the answer's status.
async fn call_any(channel: Channel, path: &str, token: Option<&str>) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    let path: tonic::codegen::http::uri::PathAndQuery = path.parse().unwrap();
    match grpc.unary(with_token((), token), path, codec).await {
        Ok(_) => tonic::Status::ok(""),
        Err(status) => status,
    }
}

#[tokio::test]
async fn every_rpc_of_every_service_refuses_a_missing_expired_foreign_or_forged_token() {
    test_support::init();
    let idp = identity_provider().await;
    let (stack, dir) = stack_trusting(&idp, 5).await;
    let mut bad = vec![(
        "expired",
        idp.sign_access_token(&AccessTokenSpec {
            expires_in: -600,
            ..spec("alice", &[ADMIN])
        })
        .unwrap(),
    )];
    bad.push((
        "for another audience",
        idp.sign_access_token(&AccessTokenSpec {
            audience: "api://someone-else".into(),
            ..spec("alice", &[ADMIN])
        })
        .unwrap(),
    ));
    bad.push((
        "from another issuer",
        idp.sign_access_token(&AccessTokenSpec {
            issuer: Some("https://evil.example/v2.0".into()),
            ..spec("alice", &[ADMIN])
        })
        .unwrap(),
    ));
    bad.push((
        "badly signed",
        idp.sign_access_token(&AccessTokenSpec {
            key: SigningKey::Forged,
            ..spec("alice", &[ADMIN])
        })
        .unwrap(),
    ));
    bad.push((
        "not a token at all",
        "0123456789abcdef0123456789".to_owned(),
    ));

    let services = [
        (
            "userimport.directory.v1.DirectoryService",
            &stack.directory_url,
        ),
        (
            "userimport.registry.v1.RegistryService",
            &stack.registry_url,
        ),
        (
            "userimport.importer.v1.ImporterService",
            &stack.importer_url,
        ),
    ];
    let mut checked = 0;
    for (service, url) in services {
        let channel = channel(url).await;
        let rpcs = service_runtime::auth::declared_rpcs(service).unwrap();
        assert!(rpcs.len() >= 8, "{service}: {rpcs:?}");
        for rpc in &rpcs {
            let status = call_any(channel.clone(), rpc, None).await;
            assert_eq!(
                status.code(),
                Code::Unauthenticated,
                "{rpc} without a token: {status:?}"
            );
            for (what, token) in &bad {
                let status = call_any(channel.clone(), rpc, Some(token)).await;
                assert_eq!(
                    status.code(),
                    Code::Unauthenticated,
                    "{rpc} with a token {what}: {status:?}"
                );
                assert!(
                    !status.message().contains(token.as_str()),
                    "the status echoes the token"
                );
            }
            checked += 1;
        }
        // Health stays open to probes that carry no token.
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
        let answer = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await;
        assert!(
            answer.is_ok(),
            "{service}: health needs no token: {answer:?}"
        );
    }
    assert!(checked >= 28, "every RPC of the three services: {checked}");
    stack.stop().await.unwrap();
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn readers_read_admins_import_and_service_identities_call_only_what_they_need() {
    test_support::init();
    let idp = identity_provider().await;
    let (stack, dir) = stack_trusting(&idp, 12).await;
    let reader = idp
        .sign_access_token(&spec("rita@contoso.com", &[READER]))
        .unwrap();
    // ES256 from the elliptic-curve key, as some providers sign.
    let admin = idp
        .sign_access_token(&AccessTokenSpec {
            key: SigningKey::Ec1,
            ..spec("alice@contoso.com", &[ADMIN])
        })
        .unwrap();
    let worker = idp
        .sign_access_token(&spec("import-worker", &[IMPORT_WORKER]))
        .unwrap();
    let sync = idp
        .sign_access_token(&spec("directory-sync", &[DIRECTORY_SYNC]))
        .unwrap();

    let directory = channel(&stack.directory_url).await;
    let registry = channel(&stack.registry_url).await;
    let importer = channel(&stack.importer_url).await;
    let mut directory_client =
        directory_pb::directory_service_client::DirectoryServiceClient::new(directory);
    let mut registry_client =
        registry_pb::registry_service_client::RegistryServiceClient::new(registry);
    let mut importer_client =
        importer_pb::importer_service_client::ImporterServiceClient::new(importer);

    // A reader may follow a round, not start one.
    let refused = directory_client
        .sync_now(with_token(
            directory_pb::SyncNowRequest::default(),
            Some(&reader),
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let first = round_to_end(
        &mut directory_client,
        directory_pb::SyncMode::Full,
        &admin,
        &reader,
    )
    .await;
    assert_eq!(
        first.status(),
        directory_pb::SyncRunStatus::Succeeded,
        "{first:?}"
    );
    let listed = directory_client
        .list_users(with_token(
            directory_pb::ListUsersRequest {
                page_size: 100,
                ..Default::default()
            },
            Some(&reader),
        ))
        .await
        .unwrap()
        .into_inner()
        .users;
    assert!(!listed.is_empty(), "a reader lists the directory");
    let members: Vec<String> = listed
        .iter()
        .filter(|u| u.account_type() == directory_pb::AccountType::Member)
        .take(2)
        .map(|u| u.object_id.clone())
        .collect();
    let import = |ids: Vec<String>| importer_pb::ImportSelectedRequest {
        object_ids: ids,
        company: "DAT".into(),
        ..Default::default()
    };

    let refused = importer_client
        .import_selected(with_token(import(members.clone()), Some(&reader)))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(
        refused.message().contains("rita@contoso.com"),
        "{}",
        refused.message()
    );

    // The admin's import crosses both service hops with the services' own tokens.
    let imported = importer_client
        .import_selected(with_token(import(members.clone()), Some(&admin)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(imported.counts.unwrap().created, 2);
    let trail = registry_client
        .list_audit_events(with_token(
            registry_pb::ListAuditEventsRequest {
                action: "import".into(),
                ..Default::default()
            },
            Some(&reader),
        ))
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(trail.len(), 2);
    assert!(
        trail.iter().all(|e| e.actor == "alice@contoso.com"),
        "the registry records whom import-worker acted for: {trail:?}"
    );

    // A group-to-role rule crosses the same hops: import-worker reads the group from
    // directory-sync and writes the grants; a sync round has directory-sync ask import-worker
    // to reconcile.
    let rule = importer_pb::AddRoleRuleRequest {
        rule: Some(importer_pb::RoleRule {
            group_id: graph_emulator::SYNTHETIC_GROUP_IDS[1].into(),
            role_id: "ACCOUNTANT".into(),
            company: "DAT".into(),
            ..Default::default()
        }),
        dry_run: false,
    };
    importer_client
        .add_role_rule(with_token(rule, Some(&admin)))
        .await
        .unwrap();
    for outcome in &imported.outcomes {
        let lookup = registry_pb::GetUserRequest {
            key: Some(registry_pb::get_user_request::Key::UserId(
                outcome.user_id.clone(),
            )),
        };
        let roles = registry_client
            .get_user(with_token(lookup, Some(&reader)))
            .await
            .unwrap()
            .into_inner()
            .roles;
        assert_eq!(roles.len(), 1, "{roles:?}");
    }
    let round = round_to_end(
        &mut directory_client,
        directory_pb::SyncMode::Delta,
        &admin,
        &admin,
    )
    .await;
    assert_eq!(
        round.status(),
        directory_pb::SyncRunStatus::Succeeded,
        "{round:?}"
    );

    // Service identities: each may call what its service needs, nothing else.
    let grant = registry_pb::AssignRolesRequest {
        user_ids: vec![imported.outcomes[0].user_id.clone()],
        role_ids: vec!["SYSADMIN".into()],
        company: String::new(),
    };
    for token in [&worker, &sync, &reader] {
        let status = registry_client
            .assign_roles(with_token(grant.clone(), Some(token)))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied);
    }
    let new_user = registry_pb::ImportUsersRequest {
        import_id: "x".into(),
        company: "DAT".into(),
        users: Vec::new(),
        dry_run: false,
        private: false,
    };
    let status = registry_client
        .import_users(with_token(new_user, Some(&sync)))
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::PermissionDenied,
        "directory-sync does not import"
    );
    let status = importer_client
        .start_batch_import(with_token(
            importer_pb::StartBatchImportRequest {
                company: "DAT".into(),
                scope: Some(directory_pb::Scope {
                    scope: Some(directory_pb::scope::Scope::All(directory_pb::AllUsers {})),
                }),
                ..Default::default()
            },
            Some(&worker),
        ))
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::PermissionDenied,
        "a service identity starts no jobs"
    );
    let check = registry_pb::CheckImportedRequest {
        tenant_id: stack.emulator.as_ref().unwrap().tenant_id().to_owned(),
        object_ids: members.clone(),
    };
    assert_eq!(
        registry_client
            .check_imported(with_token(check, Some(&sync)))
            .await
            .unwrap()
            .into_inner()
            .imported_object_ids
            .len(),
        2
    );

    // Keys roll: a token signed by the new key is accepted once the provider publishes it.
    let next_key = idp
        .sign_access_token(&AccessTokenSpec {
            key: SigningKey::Rsa2,
            ..spec("alice@contoso.com", &[ADMIN])
        })
        .unwrap();
    let status = registry_client
        .list_roles(with_token(
            registry_pb::ListRolesRequest {},
            Some(&next_key),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "not published yet");
    idp.rotate_signing_keys();
    registry_client
        .list_roles(with_token(
            registry_pb::ListRolesRequest {},
            Some(&next_key),
        ))
        .await
        .unwrap();
    stack.stop().await.unwrap();
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn a_private_job_is_invisible_to_another_admin_and_visible_to_its_creator() {
    test_support::init();
    let idp = identity_provider().await;
    let (stack, dir) = stack_trusting(&idp, 6).await;
    let alice = idp
        .sign_access_token(&spec("alice@contoso.com", &[ADMIN]))
        .unwrap();
    let bob = idp
        .sign_access_token(&spec("bob@contoso.com", &[ADMIN]))
        .unwrap();
    let mut importer = importer_pb::importer_service_client::ImporterServiceClient::new(
        channel(&stack.importer_url).await,
    );
    let start = importer_pb::StartBatchImportRequest {
        company: "DAT".into(),
        scope: Some(directory_pb::Scope {
            scope: Some(directory_pb::scope::Scope::All(directory_pb::AllUsers {})),
        }),
        options: Some(importer_pb::BatchOptions {
            private: true,
            ..Default::default()
        }),
        ..Default::default()
    };
    let job = importer
        .start_batch_import(with_token(start, Some(&alice)))
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    assert_eq!(job.created_by, "alice@contoso.com");

    let get = importer_pb::GetJobRequest {
        job_id: job.job_id.clone(),
    };
    let seen = importer
        .get_job(with_token(get.clone(), Some(&alice)))
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    assert_eq!(seen.job_id, job.job_id);
    let hidden = importer
        .get_job(with_token(get, Some(&bob)))
        .await
        .unwrap_err();
    assert_eq!(
        hidden.code(),
        Code::NotFound,
        "not PERMISSION_DENIED: its existence is not told"
    );
    let cancel = importer
        .cancel_job(with_token(
            importer_pb::CancelJobRequest {
                job_id: job.job_id.clone(),
            },
            Some(&bob),
        ))
        .await
        .unwrap_err();
    assert_eq!(cancel.code(), Code::NotFound);
    let listed = importer
        .list_jobs(with_token(
            importer_pb::ListJobsRequest::default(),
            Some(&bob),
        ))
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert!(listed.iter().all(|j| j.job_id != job.job_id));
    stack.stop().await.unwrap();
    std::fs::remove_dir_all(dir).ok();
}

/// Captures every log line of this thread (the services run on it: a current-thread runtime).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn debug_logs_and_job_reports_hold_no_client_secret_and_no_token() {
    test_support::init();
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
        .json()
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let dir = std::env::temp_dir().join(format!(
        "userimport-secrets-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let tokens = LocalTokens::generate().unwrap();
    let stack = Stack::start(StackOptions {
        storage: Storage::Sqlite(dir.clone()),
        directory: DirectorySource::Emulator { users: 60 },
        ports: Ports::ANY,
        companies: Vec::new(),
        chunk_size: 25,
        auth: StackAuth::Local(tokens.clone()),
        auto_import: false,
        sync_groups: Vec::new(),
        delta_interval_secs: 0,
        console: None,
    })
    .await
    .unwrap();
    let client_secret = stack.emulator.as_ref().unwrap().client_secret().to_owned();
    let admin = tokens.admin.expose_secret().to_owned();
    let mut directory = directory_pb::directory_service_client::DirectoryServiceClient::new(
        channel(&stack.directory_url).await,
    );
    let mut importer = importer_pb::importer_service_client::ImporterServiceClient::new(
        channel(&stack.importer_url).await,
    );

    round_to_end(&mut directory, directory_pb::SyncMode::Full, &admin, &admin).await;
    // A wrong token too: refusals must not echo it.
    let _ = importer
        .list_jobs(with_token(
            importer_pb::ListJobsRequest::default(),
            Some("wrong-token-0123456789abcdef"),
        ))
        .await;
    let report = importer
        .run_import_now(with_token(
            importer_pb::RunImportNowRequest {
                company: "DAT".into(),
                scope: Some(directory_pb::Scope {
                    scope: Some(directory_pb::scope::Scope::All(directory_pb::AllUsers {})),
                }),
            },
            Some(&admin),
        ))
        .await
        .unwrap()
        .into_inner();
    let job = report.job.clone().unwrap();
    assert!(job.counts.as_ref().unwrap().created > 0);
    let outcomes = importer
        .list_job_outcomes(with_token(
            importer_pb::ListJobOutcomesRequest {
                job_id: job.job_id.clone(),
                ..Default::default()
            },
            Some(&admin),
        ))
        .await
        .unwrap()
        .into_inner();
    stack.stop().await.unwrap();
    drop(_guard);

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.lines().count() > 50,
        "debug logging captured the run: {} lines",
        logs.lines().count()
    );
    let reports = format!("{report:?}{outcomes:?}");
    let secrets = [
        ("the Graph client secret", client_secret.as_str()),
        ("the admin token", admin.as_str()),
        (
            "import-worker's token",
            tokens.import_worker.expose_secret(),
        ),
        (
            "directory-sync's token",
            tokens.directory_sync.expose_secret(),
        ),
        ("a refused token", "wrong-token-0123456789abcdef"),
    ];
    for (what, secret) in secrets {
        assert!(!logs.contains(secret), "{what} is in the logs");
        assert!(!reports.contains(secret), "{what} is in a job report");
    }
    // The emulator's Graph access tokens all start with "emu.".
    assert!(
        !logs.contains("emu."),
        "a Graph access token is in the logs"
    );
    assert!(
        !reports.contains("emu."),
        "a Graph access token is in a job report"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn an_oversized_token_is_unauthenticated_and_the_connection_survives() {
    test_support::init();
    let idp = identity_provider().await;
    let (stack, dir) = stack_trusting(&idp, 3).await;
    let reader = idp
        .sign_access_token(&spec("rita@contoso.com", &[READER]))
        .unwrap();
    let channel = channel(&stack.registry_url).await;
    let mut registry = registry_pb::registry_service_client::RegistryServiceClient::new(channel);
    let limit = service_runtime::auth::MAX_TOKEN_BYTES;
    // Just over the guard's limit, at hyper's old 16 KiB header limit (HTTP 431 before), and
    // near the server's 64 KiB limit.
    for size in [limit + 1, 16 * 1024, 60 * 1024] {
        let huge = "a".repeat(size);
        let status = registry
            .list_roles(with_token(registry_pb::ListRolesRequest {}, Some(&huge)))
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::Unauthenticated,
            "{size} bytes: {status:?}"
        );
        assert!(
            !status.message().contains(&huge[..64]),
            "the status echoes the token"
        );
        // The same connection still serves a good call.
        registry
            .list_roles(with_token(registry_pb::ListRolesRequest {}, Some(&reader)))
            .await
            .unwrap_or_else(|e| panic!("after a {size}-byte token: {e:?}"));
    }
    // Beyond the server's header limit the stream alone is refused (HTTP 431); the connection
    // still serves.
    let beyond = "a".repeat(1024 * 1024);
    let status = registry
        .list_roles(with_token(registry_pb::ListRolesRequest {}, Some(&beyond)))
        .await
        .unwrap_err();
    assert_ne!(status.code(), Code::Ok);
    registry
        .list_roles(with_token(registry_pb::ListRolesRequest {}, Some(&reader)))
        .await
        .unwrap_or_else(|e| panic!("after a 1 MiB header: {e:?}"));
    stack.stop().await.unwrap();
    std::fs::remove_dir_all(dir).ok();
}

/// Issue 14: what a private batch job made is private in the registry too — its users by
/// job, its audit events and its id — and a leaked import-worker token grants nothing under a
/// rule import-worker never registered.
#[tokio::test]
async fn a_private_jobs_users_and_events_are_invisible_to_a_reader_and_a_second_admin() {
    test_support::init();
    let idp = identity_provider().await;
    let (stack, dir) = stack_trusting(&idp, 6).await;
    let token = |name: &str, role: &str| idp.sign_access_token(&spec(name, &[role])).unwrap();
    let (alice, bob, rita) = (
        token("alice@contoso.com", ADMIN),
        token("bob@contoso.com", ADMIN),
        token("rita@contoso.com", READER),
    );
    let worker = token("import-worker", IMPORT_WORKER);
    let mut directory = directory_pb::directory_service_client::DirectoryServiceClient::new(
        channel(&stack.directory_url).await,
    );
    let mut importer = importer_pb::importer_service_client::ImporterServiceClient::new(
        channel(&stack.importer_url).await,
    );
    let mut registry = registry_pb::registry_service_client::RegistryServiceClient::new(
        channel(&stack.registry_url).await,
    );
    round_to_end(&mut directory, directory_pb::SyncMode::Full, &alice, &alice).await;
    let start = importer_pb::StartBatchImportRequest {
        company: "DAT".into(),
        scope: Some(directory_pb::Scope {
            scope: Some(directory_pb::scope::Scope::All(directory_pb::AllUsers {})),
        }),
        options: Some(importer_pb::BatchOptions {
            private: true,
            ..Default::default()
        }),
        ..Default::default()
    };
    let job = importer
        .start_batch_import(with_token(start, Some(&alice)))
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    let job = loop {
        let get = importer_pb::GetJobRequest {
            job_id: job.job_id.clone(),
        };
        let seen = importer
            .get_job(with_token(get, Some(&alice)))
            .await
            .unwrap()
            .into_inner()
            .job
            .unwrap();
        if seen.status() == importer_pb::JobStatus::Completed {
            break seen;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let created = job.counts.unwrap().created;
    assert!(created > 0);

    let by_job = || registry_pb::ListUsersRequest {
        created_by_import: job.job_id.clone(),
        ..Default::default()
    };
    let by_via = || registry_pb::ListAuditEventsRequest {
        via: job.job_id.clone(),
        ..Default::default()
    };
    for outsider in [&rita, &bob] {
        let users = registry
            .list_users(with_token(by_job(), Some(outsider)))
            .await
            .unwrap()
            .into_inner()
            .users;
        assert!(users.is_empty(), "an outsider lists the job's users");
        let events = registry
            .list_audit_events(with_token(by_via(), Some(outsider)))
            .await
            .unwrap()
            .into_inner()
            .events;
        assert!(events.is_empty(), "an outsider reads the job's events");
        let all = registry
            .list_users(with_token(
                registry_pb::ListUsersRequest::default(),
                Some(outsider),
            ))
            .await
            .unwrap()
            .into_inner()
            .users;
        assert!(!all.is_empty());
        assert!(
            all.iter().all(|u| u.created_by_import != job.job_id),
            "an outsider sees the job id"
        );
    }
    let users = registry
        .list_users(with_token(by_job(), Some(&alice)))
        .await
        .unwrap()
        .into_inner()
        .users;
    assert_eq!(users.len() as u64, created, "its creator sees them");
    let events = registry
        .list_audit_events(with_token(by_via(), Some(&alice)))
        .await
        .unwrap()
        .into_inner()
        .events;
    assert!(
        events
            .iter()
            .all(|e| e.actor == "alice@contoso.com" && e.service == "import-worker"),
        "the trail names the person and the service: {events:?}"
    );

    // The reviewer's forged rule, with import-worker's own token.
    let forged = registry_pb::ApplyRuleGrantsRequest {
        rule_id: "worker-forged".into(),
        role_id: "SYSADMIN".into(),
        tenant_id: users[0].tenant_id.clone(),
        grant_object_ids: vec![users[0].object_id.clone()],
        ..Default::default()
    };
    let mut request = with_token(forged, Some(&worker));
    request.metadata_mut().insert(
        service_runtime::auth::ON_BEHALF_OF_HEADER,
        "any.admin@contoso.com".parse().unwrap(),
    );
    let status = registry.apply_rule_grants(request).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    let lookup = registry_pb::GetUserRequest {
        key: Some(registry_pb::get_user_request::Key::UserId(
            users[0].user_id.clone(),
        )),
    };
    let roles = registry
        .get_user(with_token(lookup, Some(&rita)))
        .await
        .unwrap()
        .into_inner()
        .roles;
    assert!(roles.is_empty(), "nothing was granted: {roles:?}");
    stack.stop().await.unwrap();
    std::fs::remove_dir_all(dir).ok();
}

/// Issue 14: least privilege, checked against the one table that states it. Every RPC of the
/// three services (enumerated from the descriptor set) is called by each identity; exactly
/// the callers the service's access table leaves out are refused, before anything is written.
#[tokio::test]
async fn every_identity_is_refused_exactly_the_rpcs_its_access_table_leaves_out() {
    test_support::init();
    let idp = identity_provider().await;
    let (stack, dir) = stack_trusting(&idp, 5).await;
    let token =
        |subject: &str, roles: &[&str]| idp.sign_access_token(&spec(subject, roles)).unwrap();
    // (identity, its token's roles): the product's four roles and a token with none of them.
    let identities = [
        ("reader", token("rita@contoso.com", &[READER])),
        ("admin", token("alice@contoso.com", &[ADMIN])),
        ("import-worker", token("import-worker", &[IMPORT_WORKER])),
        ("directory-sync", token("directory-sync", &[DIRECTORY_SYNC])),
        ("no role", token("mallory@contoso.com", &[])),
    ];
    let role_of = |identity: &str| match identity {
        "reader" => Some(READER),
        "admin" => Some(ADMIN),
        "import-worker" => Some(IMPORT_WORKER),
        "directory-sync" => Some(DIRECTORY_SYNC),
        _ => None,
    };
    let services = [
        (
            "userimport.directory.v1.DirectoryService",
            stack.directory_url.clone(),
            directory_sync::grpc::ACCESS,
        ),
        (
            "userimport.registry.v1.RegistryService",
            stack.registry_url.clone(),
            user_registry::grpc::ACCESS,
        ),
        (
            "userimport.importer.v1.ImporterService",
            stack.importer_url.clone(),
            import_worker::grpc::ACCESS,
        ),
    ];
    let allowed = |rules: service_runtime::auth::AccessRules, rpc: &str, identity: &str| {
        let roles = rules
            .iter()
            .find(|(path, _)| *path == rpc)
            .map(|(_, roles)| *roles)
            .unwrap_or_else(|| panic!("{rpc} is in no access table"));
        role_of(identity).is_some_and(|role| roles.contains(&role))
    };

    // Every refusal first, so that "nothing written" can be checked before anyone may write.
    let mut refused = 0;
    for (service, url, rules) in &services {
        let channel = channel(url).await;
        for rpc in service_runtime::auth::declared_rpcs(service).unwrap() {
            for (identity, token) in &identities {
                if allowed(rules, &rpc, identity) {
                    continue;
                }
                let status = call_any(channel.clone(), &rpc, Some(token)).await;
                assert_eq!(
                    status.code(),
                    Code::PermissionDenied,
                    "{rpc} by {identity}: {status:?}"
                );
                refused += 1;
            }
        }
    }
    // Readers alone are refused every write of the three services.
    assert!(refused >= 60, "{refused} refusals");

    let admin = identities[1].1.as_str();
    let mut registry = registry_pb::registry_service_client::RegistryServiceClient::new(
        channel(&stack.registry_url).await,
    );
    let mut importer = importer_pb::importer_service_client::ImporterServiceClient::new(
        channel(&stack.importer_url).await,
    );
    let mut directory = directory_pb::directory_service_client::DirectoryServiceClient::new(
        channel(&stack.directory_url).await,
    );
    let events = registry
        .list_audit_events(with_token(
            registry_pb::ListAuditEventsRequest::default(),
            Some(admin),
        ))
        .await
        .unwrap()
        .into_inner()
        .events;
    assert!(events.is_empty(), "refused calls were audited: {events:?}");
    let users = registry
        .list_users(with_token(
            registry_pb::ListUsersRequest::default(),
            Some(admin),
        ))
        .await
        .unwrap()
        .into_inner()
        .users;
    assert!(users.is_empty(), "refused calls wrote users: {users:?}");
    let runs = directory
        .list_sync_runs(with_token(
            directory_pb::ListSyncRunsRequest::default(),
            Some(admin),
        ))
        .await
        .unwrap()
        .into_inner()
        .runs;
    assert!(runs.is_empty(), "a refused call started a round: {runs:?}");

    // An import with no scope is refused: the whole tenant is imported only when asked for.
    let no_scope = [
        importer
            .start_batch_import(with_token(
                importer_pb::StartBatchImportRequest {
                    company: "DAT".into(),
                    ..Default::default()
                },
                Some(admin),
            ))
            .await
            .unwrap_err(),
        importer
            .run_import_now(with_token(
                importer_pb::RunImportNowRequest {
                    company: "DAT".into(),
                    scope: None,
                },
                Some(admin),
            ))
            .await
            .unwrap_err(),
    ];
    for status in no_scope {
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        let fields: Vec<String> = tonic_types::StatusExt::get_details_bad_request(&status)
            .map(|bad| bad.field_violations.into_iter().map(|v| v.field).collect())
            .unwrap_or_default();
        assert_eq!(fields, ["scope"], "{status:?}");
    }
    let jobs = importer
        .list_jobs(with_token(
            importer_pb::ListJobsRequest::default(),
            Some(admin),
        ))
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert!(jobs.is_empty(), "{jobs:?}");

    // And every identity the table names gets past the guard (the empty request may then be
    // refused for what it holds, never for who sent it).
    let mut let_in = 0;
    for (service, url, rules) in &services {
        let channel = channel(url).await;
        for rpc in service_runtime::auth::declared_rpcs(service).unwrap() {
            for (identity, token) in &identities {
                if !allowed(rules, &rpc, identity) {
                    continue;
                }
                let status = call_any(channel.clone(), &rpc, Some(token)).await;
                assert!(
                    !matches!(
                        status.code(),
                        Code::PermissionDenied | Code::Unauthenticated
                    ),
                    "{rpc} by {identity}: {status:?}"
                );
                let_in += 1;
            }
        }
    }
    assert!(let_in >= 40, "{let_in} calls let in");
    stack.stop().await.unwrap();
    std::fs::remove_dir_all(dir).ok();
}
