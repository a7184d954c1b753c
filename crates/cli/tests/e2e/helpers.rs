use cli::stack::{DirectorySource, Ports, Stack, StackAuth, StackOptions, Storage};
use graph_emulator::EmulatedUser;
use proto::directory::v1 as directory_pb;
use proto::directory::v1::directory_service_client::DirectoryServiceClient;
use proto::importer::v1 as importer_pb;
use proto::importer::v1::importer_service_client::ImporterServiceClient;
use proto::registry::v1 as registry_pb;
use proto::registry::v1::registry_service_client::RegistryServiceClient;
use test_support::TestDatabase;
use tonic::transport::Channel;

/// How an end-to-end stack is set up beyond the defaults.
#[derive(Default)]
pub(crate) struct Setup {
    pub(crate) auto_import: bool,
    /// Synced groups: (object id, members as indexes into the tenant's users).
    pub(crate) groups: Vec<(String, Vec<usize>)>,
    pub(crate) chunk_size: Option<u32>,
}

pub(crate) struct EndToEnd {
    pub(crate) stack: Stack,
    pub(crate) directory: DirectoryServiceClient<Channel>,
    pub(crate) registry: RegistryServiceClient<Channel>,
    pub(crate) importer: ImporterServiceClient<Channel>,
}

pub(crate) fn storage_for(db: &TestDatabase) -> Storage {
    match (db.sqlite_dir(), db.postgres_schema()) {
        (Some(dir), _) => Storage::Sqlite(dir.to_owned()),
        (None, Some((server, schema))) => Storage::Postgres {
            url: server.to_owned(),
            schema_prefix: schema.to_owned(),
        },
        (None, None) => unreachable!("a test database is SQLite or Postgres"),
    }
}

impl EndToEnd {
    /// The emulator with `users` synthetic users and the three services, synced once.
    pub(crate) async fn start(db: &TestDatabase, users: usize) -> Self {
        Self::start_with(db, users, false).await
    }

    /// With directory-sync importing new directory users after each round.
    pub(crate) async fn start_with(db: &TestDatabase, users: usize, auto_import: bool) -> Self {
        Self::start_configured(
            db,
            users,
            Setup {
                auto_import,
                ..Setup::default()
            },
        )
        .await
    }

    /// With these settings; `setup.groups` are created in the emulator (members by index
    /// into the tenant) and synced by directory-sync before the first round.
    pub(crate) async fn start_configured(db: &TestDatabase, users: usize, setup: Setup) -> Self {
        let stack = Stack::start(StackOptions {
            storage: storage_for(db),
            directory: DirectorySource::Emulator { users },
            ports: Ports::ANY,
            companies: vec![("USMF".into(), "Contoso USA".into())],
            chunk_size: setup.chunk_size.unwrap_or(50),
            auth: StackAuth::Insecure,
            auto_import: setup.auto_import,
            sync_groups: setup.groups.iter().map(|(id, _)| id.clone()).collect(),
            delta_interval_secs: 0,
            console: None,
        })
        .await
        .unwrap();
        let emulator = stack.emulator.as_ref().unwrap();
        let tenant = emulator.users();
        for (id, members) in &setup.groups {
            emulator
                .add_group(graph_emulator::EmulatedGroup {
                    id: id.clone(),
                    display_name: format!("Group {id}"),
                    members: members
                        .iter()
                        .map(|&i| graph_emulator::GroupMember::User(tenant[i].id.clone()))
                        .collect(),
                })
                .unwrap();
        }
        let mut directory = DirectoryServiceClient::connect(stack.directory_url.clone())
            .await
            .unwrap();
        let run = round_to_end(
            &mut directory,
            directory_pb::SyncNowRequest {
                mode: directory_pb::SyncMode::Full.into(),
                ..Default::default()
            },
        )
        .await
        .run
        .unwrap();
        assert_eq!(run.users_seen, users as u64);
        Self {
            registry: RegistryServiceClient::connect(stack.registry_url.clone())
                .await
                .unwrap(),
            importer: ImporterServiceClient::connect(stack.importer_url.clone())
                .await
                .unwrap(),
            directory,
            stack,
        }
    }

    pub(crate) fn tenant(&self) -> Vec<EmulatedUser> {
        self.stack.emulator.as_ref().unwrap().users()
    }

    /// Every user the select-import dialog lists, page by page.
    pub(crate) async fn list_not_imported(&self) -> Vec<directory_pb::DirectoryUser> {
        let mut users = Vec::new();
        let mut token = String::new();
        loop {
            let request = directory_pb::ListUsersRequest {
                page_size: 64,
                page_token: token,
                ..Default::default()
            };
            let page = self
                .directory
                .clone()
                .list_users(request)
                .await
                .unwrap()
                .into_inner();
            users.extend(page.users);
            if page.next_page_token.is_empty() {
                return users;
            }
            token = page.next_page_token;
        }
    }

    pub(crate) async fn import(
        &self,
        object_ids: Vec<String>,
        company: &str,
    ) -> Result<importer_pb::ImportSelectedResponse, tonic::Status> {
        let request = importer_pb::ImportSelectedRequest {
            object_ids,
            company: company.into(),
            ..Default::default()
        };
        Ok(self
            .importer
            .clone()
            .import_selected(request)
            .await?
            .into_inner())
    }

    pub(crate) async fn registry_users(&self) -> Vec<registry_pb::RegistryUser> {
        let request = registry_pb::ListUsersRequest {
            page_size: 1000,
            ..Default::default()
        };
        self.registry
            .clone()
            .list_users(request)
            .await
            .unwrap()
            .into_inner()
            .users
    }
}

/// Starts a round and follows it to its end (WatchSyncRun): its last message, with the ended
/// run and a dry run's preview.
pub(crate) async fn round_to_end(
    directory: &mut DirectoryServiceClient<Channel>,
    request: directory_pb::SyncNowRequest,
) -> directory_pb::WatchSyncRunResponse {
    let run = directory
        .sync_now(request)
        .await
        .unwrap()
        .into_inner()
        .run
        .unwrap();
    let watch = directory_pb::WatchSyncRunRequest { run_id: run.run_id };
    let mut stream = directory.watch_sync_run(watch).await.unwrap().into_inner();
    let mut last = None;
    while let Some(update) = stream.message().await.unwrap() {
        last = Some(update);
    }
    last.unwrap()
}
