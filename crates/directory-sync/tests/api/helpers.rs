use directory_sync::config::DirectoryConfig;
use directory_sync::{App, Config, store};
use graph_emulator::{EmulatedUser, Emulator, EmulatorConfig};
use proto::directory::v1 as pb;
use proto::directory::v1::directory_service_client::DirectoryServiceClient;
use proto::registry::v1 as registry_pb;
use proto::registry::v1::registry_service_client::RegistryServiceClient;
use service_runtime::storage::Database;
use test_support::TestDatabase;
use tokio_util::sync::{CancellationToken, DropGuard};
use tonic::transport::Channel;

/// The emulator, a user-registry (on its own SQLite file) and directory-sync on the database
/// under test.
pub(crate) struct Stack {
    pub(crate) directory: DirectoryServiceClient<Channel>,
    pub(crate) registry: RegistryServiceClient<Channel>,
    pub(crate) emulator: Emulator,
    pub(crate) db: Database,
    registry_url: String,
    _registry_db: TestDatabase,
    _guards: Vec<DropGuard>,
}

pub(crate) async fn start_emulator(users: Vec<EmulatedUser>) -> Emulator {
    let config = EmulatorConfig {
        users,
        ..EmulatorConfig::synthetic(0)
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    Emulator::start(config, listener).await.unwrap()
}

pub(crate) fn directory_config(emulator: &Emulator) -> DirectoryConfig {
    DirectoryConfig::single_host(
        emulator.base_url().as_str().trim_end_matches('/'),
        emulator.tenant_id(),
        emulator.client_id(),
        emulator.client_secret(),
    )
}

async fn spawn_directory(
    db: &Database,
    registry_url: &str,
    directory: DirectoryConfig,
) -> (DirectoryServiceClient<Channel>, DropGuard) {
    let config = Config::for_tests("unused", registry_url, directory);
    let graph = graph::GraphClient::new(config.directory.graph_config().unwrap()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = App::build(&config, db.clone(), listener, graph)
        .await
        .unwrap();
    let addr = app.local_addr();
    let shutdown = CancellationToken::new();
    tokio::spawn(app.run(shutdown.clone()));
    let client = DirectoryServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    (client, shutdown.drop_guard())
}

impl Stack {
    pub(crate) async fn spawn(db: &TestDatabase, tenant_size: usize) -> Self {
        let emulator =
            start_emulator(graph_emulator::synthetic_users(tenant_size, "contoso.com")).await;
        Self::spawn_with(db, emulator).await
    }

    pub(crate) async fn spawn_with(db: &TestDatabase, emulator: Emulator) -> Self {
        let registry_db = TestDatabase::sqlite().await;
        let registry_database = Database::connect(&registry_db.url, 2).await.unwrap();
        registry_database
            .migrate(&user_registry::store::MIGRATIONS)
            .await
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let registry_app = user_registry::App::build(
            &user_registry::Config::for_tests(&registry_db.url),
            registry_database,
            listener,
        )
        .await
        .unwrap();
        let registry_url = format!("http://{}", registry_app.local_addr());
        let registry_shutdown = CancellationToken::new();
        tokio::spawn(registry_app.run(registry_shutdown.clone()));

        let database = Database::connect(&db.url, 5).await.unwrap();
        database.migrate(&store::MIGRATIONS).await.unwrap();
        let (directory, directory_guard) =
            spawn_directory(&database, &registry_url, directory_config(&emulator)).await;
        let registry = RegistryServiceClient::connect(registry_url.clone())
            .await
            .unwrap();
        Self {
            directory,
            registry,
            emulator,
            db: database,
            registry_url,
            _registry_db: registry_db,
            _guards: vec![registry_shutdown.drop_guard(), directory_guard],
        }
    }

    /// A second directory-sync over the same mirror, reading another directory.
    pub(crate) async fn directory_reading(
        &mut self,
        directory: DirectoryConfig,
    ) -> DirectoryServiceClient<Channel> {
        let (client, guard) = spawn_directory(&self.db, &self.registry_url, directory).await;
        self._guards.push(guard);
        client
    }

    pub(crate) async fn full_sync(&self) -> pb::SyncRun {
        let request = pb::SyncNowRequest {
            mode: pb::SyncMode::Full.into(),
        };
        self.directory
            .clone()
            .sync_now(request)
            .await
            .unwrap()
            .into_inner()
            .run
            .unwrap()
    }

    /// Imports the given directory users straight into the registry.
    pub(crate) async fn import_into_registry(&self, users: &[&EmulatedUser]) {
        let users = users
            .iter()
            .map(|u| registry_pb::NewUser {
                tenant_id: self.emulator.tenant_id().into(),
                object_id: u.id.clone(),
                network_alias: u.user_principal_name.clone(),
                network_domain: "https://sts.windows.net/".into(),
                email: u.user_principal_name.clone(),
                name: u.display_name.clone(),
                enabled: true,
                account_type: registry_pb::AccountType::Member.into(),
            })
            .collect();
        let request = registry_pb::ImportUsersRequest {
            import_id: "test".into(),
            company: "DAT".into(),
            users,
        };
        self.registry.clone().import_users(request).await.unwrap();
    }

    pub(crate) async fn list(&self, request: pb::ListUsersRequest) -> pb::ListUsersResponse {
        self.directory
            .clone()
            .list_users(request)
            .await
            .unwrap()
            .into_inner()
    }
}
