use directory_sync::config::{DirectoryConfig, ProvisioningConfig, SyncConfig};
use directory_sync::{App, Config, store};
use futures::StreamExt as _;
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
    start_emulator_with(EmulatorConfig {
        users,
        ..EmulatorConfig::synthetic(0)
    })
    .await
}

pub(crate) async fn start_emulator_with(config: EmulatorConfig) -> Emulator {
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

/// No sync at start, no schedule, no groups.
pub(crate) fn no_schedule() -> SyncConfig {
    SyncConfig {
        full_sync_on_start: false,
        delta_interval_secs: 0,
        groups: Vec::new(),
    }
}

/// A user-registry served on `addr` over `db` (migrated), until `stop`.
pub(crate) struct ServedRegistry {
    pub(crate) addr: std::net::SocketAddr,
    pub(crate) stop: CancellationToken,
    pub(crate) task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

pub(crate) async fn serve_registry(
    db: &TestDatabase,
    addr: std::net::SocketAddr,
) -> ServedRegistry {
    let database = Database::connect(&db.url, 2).await.unwrap();
    database
        .migrate(&user_registry::store::MIGRATIONS)
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let app = user_registry::App::build(&user_registry::Config::local(&db.url), database, listener)
        .await
        .unwrap();
    let addr = app.local_addr();
    let stop = CancellationToken::new();
    let task = tokio::spawn(app.run(stop.clone()));
    ServedRegistry { addr, stop, task }
}

async fn spawn_directory(
    db: &Database,
    registry_url: &str,
    directory: DirectoryConfig,
    sync: SyncConfig,
    provisioning: ProvisioningConfig,
) -> (DirectoryServiceClient<Channel>, DropGuard) {
    let mut config = Config::local("unused", registry_url, directory);
    config.sync = sync;
    config.provisioning = provisioning;
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
        Self::spawn_configured(db, emulator, no_schedule()).await
    }

    /// With these sync settings (groups, schedule).
    pub(crate) async fn spawn_configured(
        db: &TestDatabase,
        emulator: Emulator,
        sync: SyncConfig,
    ) -> Self {
        Self::spawn_provisioned(db, emulator, sync, ProvisioningConfig::default()).await
    }

    /// With these sync and provisioning settings.
    pub(crate) async fn spawn_provisioned(
        db: &TestDatabase,
        emulator: Emulator,
        sync: SyncConfig,
        provisioning: ProvisioningConfig,
    ) -> Self {
        let registry_db = TestDatabase::sqlite().await;
        let registry = serve_registry(&registry_db, "127.0.0.1:0".parse().unwrap()).await;
        let registry_url = format!("http://{}", registry.addr);
        let registry_shutdown = registry.stop;

        let database = Database::connect(&db.url, 5).await.unwrap();
        database.migrate(&store::MIGRATIONS).await.unwrap();
        let (directory, directory_guard) = spawn_directory(
            &database,
            &registry_url,
            directory_config(&emulator),
            sync,
            provisioning,
        )
        .await;
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
        let (client, guard) = spawn_directory(
            &self.db,
            &self.registry_url,
            directory,
            no_schedule(),
            ProvisioningConfig::default(),
        )
        .await;
        self._guards.push(guard);
        client
    }

    /// The configuration of another directory-sync over this stack's mirror and registry,
    /// reading `directory`.
    pub(crate) fn config_reading(&self, database_url: &str, directory: DirectoryConfig) -> Config {
        let mut config = Config::local(database_url, &self.registry_url, directory);
        config.sync = no_schedule();
        config
    }

    pub(crate) async fn full_sync(&self) -> pb::SyncRun {
        self.sync(pb::SyncMode::Full).await
    }

    pub(crate) async fn sync(&self, mode: pb::SyncMode) -> pb::SyncRun {
        let request = pb::SyncNowRequest {
            mode: mode.into(),
            ..Default::default()
        };
        run_to_end(&mut self.directory.clone(), request)
            .await
            .run
            .unwrap()
    }

    /// Every present user of the mirror (or of one group), through StreamUsers.
    pub(crate) async fn stream(
        &self,
        group_id: Option<&str>,
        batch_size: u32,
    ) -> Vec<pb::DirectoryUser> {
        let scope = group_id.map(|id| pb::Scope {
            scope: Some(pb::scope::Scope::GroupId(id.to_owned())),
        });
        let request = pb::StreamUsersRequest {
            scope,
            batch_size,
            ..Default::default()
        };
        let mut stream = self
            .directory
            .clone()
            .stream_users(request)
            .await
            .unwrap()
            .into_inner();
        let mut users = Vec::new();
        while let Some(batch) = stream.next().await {
            let batch = batch.unwrap();
            assert!(batch.users.len() <= batch_size as usize);
            users.extend(batch.users);
        }
        users
    }

    /// Imports the given directory users straight into the registry.
    pub(crate) async fn import_into_registry(&self, users: &[&EmulatedUser]) {
        for part in users.chunks(1000) {
            self.import_part(part).await;
        }
    }

    async fn import_part(&self, users: &[&EmulatedUser]) {
        let users: Vec<_> = users
            .iter()
            .map(|u| {
                (
                    u.id.as_str(),
                    u.user_principal_name.as_str(),
                    u.display_name.as_str(),
                )
            })
            .collect();
        let request = member_import("test", self.emulator.tenant_id(), &users);
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

/// Starts a round and follows it to its end; answers the last message (the ended run, and a
/// dry run's preview).
pub(crate) async fn run_to_end(
    directory: &mut DirectoryServiceClient<Channel>,
    request: pb::SyncNowRequest,
) -> pb::WatchSyncRunResponse {
    let run = directory
        .sync_now(request)
        .await
        .unwrap()
        .into_inner()
        .run
        .unwrap();
    assert_eq!(
        run.status(),
        pb::SyncRunStatus::Running,
        "SyncNow answers at once"
    );
    follow(directory, &run.run_id).await.pop().unwrap()
}

/// Every message of a watch of `run_id`, until the stream ends; the last holds the ended run.
pub(crate) async fn follow(
    directory: &mut DirectoryServiceClient<Channel>,
    run_id: &str,
) -> Vec<pb::WatchSyncRunResponse> {
    let request = pb::WatchSyncRunRequest {
        run_id: run_id.to_owned(),
    };
    let mut stream = directory
        .watch_sync_run(request)
        .await
        .unwrap()
        .into_inner();
    let mut updates = Vec::new();
    while let Some(update) = stream.message().await.unwrap() {
        updates.push(update);
    }
    let last = updates.last().expect("a watch sends the run at least once");
    assert_ne!(
        last.run.as_ref().unwrap().status(),
        pb::SyncRunStatus::Running,
        "the watch ends when the round has"
    );
    updates
}

/// The mirror equals the directory: the same present users with the same fields.
pub(crate) fn assert_mirror_equals_directory(
    mirror: &[pb::DirectoryUser],
    directory: &[EmulatedUser],
) {
    let mut expected: Vec<(String, String, String, String, bool)> = directory
        .iter()
        .map(|u| {
            (
                u.id.clone(),
                u.user_principal_name.clone(),
                u.mail.clone().unwrap_or_default(),
                u.display_name.clone(),
                u.account_enabled,
            )
        })
        .collect();
    let mut actual: Vec<(String, String, String, String, bool)> = mirror
        .iter()
        .map(|u| {
            (
                u.object_id.clone(),
                u.user_principal_name.clone(),
                u.mail.clone(),
                u.display_name.clone(),
                u.account_enabled,
            )
        })
        .collect();
    expected.sort();
    actual.sort();
    assert_eq!(
        actual.len(),
        expected.len(),
        "mirror and directory differ in size"
    );
    let differences: Vec<_> = actual
        .iter()
        .zip(&expected)
        .filter(|(a, e)| a != e)
        .take(5)
        .collect();
    assert!(
        differences.is_empty(),
        "mirror differs from the directory: {differences:?}"
    );
}

/// The `ImportUsers` request a select import sends for these members of `tenant_id`, each
/// given as (object id, user principal name, display name), into company DAT.
pub(crate) fn member_import(
    import_id: &str,
    tenant_id: &str,
    users: &[(&str, &str, &str)],
) -> registry_pb::ImportUsersRequest {
    registry_pb::ImportUsersRequest {
        import_id: import_id.into(),
        company: "DAT".into(),
        users: users
            .iter()
            .map(|(object_id, upn, name)| registry_pb::NewUser {
                tenant_id: tenant_id.into(),
                object_id: (*object_id).into(),
                network_alias: (*upn).into(),
                network_domain: "https://sts.windows.net/".into(),
                email: (*upn).into(),
                name: (*name).into(),
                enabled: true,
                account_type: registry_pb::AccountType::Member.into(),
            })
            .collect(),
        dry_run: false,
        private: false,
    }
}
