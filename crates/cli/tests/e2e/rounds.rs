//! Rounds across the stack: services start in any order (the first round waits for
//! import-worker), a failed round names the service that failed, and the CLI's exit code is
//! the round's.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use cli::stack::Storage;
use directory_sync::config::DirectoryConfig;
use graph_emulator::{Emulator, EmulatorConfig};
use proto::directory::v1 as pb;
use proto::directory::v1::directory_service_client::DirectoryServiceClient;
use test_support::TestDatabase;
use tokio::net::TcpListener;
use tokio_util::sync::{CancellationToken, DropGuard};
use tonic::transport::Channel;

use crate::helpers::storage_for;

/// The emulator, user-registry and directory-sync (whose first round runs at start-up), with
/// import-worker's address configured and nothing serving there yet: the compose start order.
struct WithoutImporter {
    storage: Storage,
    _emulator: Emulator,
    registry_url: String,
    directory_url: String,
    importer_addr: SocketAddr,
    directory: DirectoryServiceClient<Channel>,
    shutdown: CancellationToken,
    _stop: DropGuard,
}

async fn local() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.unwrap()
}

impl WithoutImporter {
    /// With directory-sync retrying its peers for `peer_retry_secs`.
    async fn start(db: &TestDatabase, peer_retry_secs: u64) -> Self {
        let storage = storage_for(db);
        let shutdown = CancellationToken::new();
        let emulator = Emulator::start(EmulatorConfig::synthetic(40), local().await)
            .await
            .unwrap();
        let (registry_db, registry_db_url) = storage
            .database("registry", &user_registry::store::MIGRATIONS)
            .await
            .unwrap();
        let listener = local().await;
        let registry_url = format!("http://{}", listener.local_addr().unwrap());
        let registry = user_registry::App::build(
            &user_registry::Config::local(&registry_db_url),
            registry_db,
            listener,
        )
        .await
        .unwrap();
        tokio::spawn(registry.run(shutdown.clone()));
        // A free port, closed again: calls to it are refused until import-worker binds it.
        let importer_addr = local().await.local_addr().unwrap();

        let (directory_db, directory_db_url) = storage
            .database("directory", &directory_sync::store::MIGRATIONS)
            .await
            .unwrap();
        let base = emulator
            .base_url()
            .as_str()
            .trim_end_matches('/')
            .to_owned();
        let source = DirectoryConfig::single_host(
            &base,
            emulator.tenant_id(),
            emulator.client_id(),
            emulator.client_secret(),
        );
        let mut config = directory_sync::Config::local(&directory_db_url, &registry_url, source);
        config.importer_url = format!("http://{importer_addr}");
        config.sync.full_sync_on_start = true;
        config.provisioning.peer_retry_secs = peer_retry_secs;
        let graph = graph::GraphClient::new(config.directory.graph_config().unwrap()).unwrap();
        let listener = local().await;
        let directory_url = format!("http://{}", listener.local_addr().unwrap());
        let app = directory_sync::App::build(&config, directory_db, listener, graph)
            .await
            .unwrap();
        tokio::spawn(app.run(shutdown.clone()));
        let directory = DirectoryServiceClient::connect(directory_url.clone())
            .await
            .unwrap();
        Self {
            storage,
            _emulator: emulator,
            registry_url,
            directory_url,
            importer_addr,
            directory,
            _stop: shutdown.clone().drop_guard(),
            shutdown,
        }
    }

    /// The last round as directory-sync reports it (a running one with its counts so far),
    /// once there is one.
    async fn last_round(&self) -> pb::SyncRun {
        loop {
            let status = self
                .directory
                .clone()
                .get_sync_status(pb::GetSyncStatusRequest {})
                .await
                .unwrap()
                .into_inner();
            if let Some(run) = status.last_run {
                return run;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn start_importer(&self) {
        let (db, url) = self
            .storage
            .database("importer", &import_worker::store::MIGRATIONS)
            .await
            .unwrap();
        let config = import_worker::Config::local(&url, &self.directory_url, &self.registry_url);
        let queue = import_worker::app::connect_queue(&config.queue)
            .await
            .unwrap();
        let listener = TcpListener::bind(self.importer_addr).await.unwrap();
        let app = import_worker::App::build(&config, db, listener, queue)
            .await
            .unwrap();
        tokio::spawn(app.run(self.shutdown.clone()));
    }

    /// Follows a round to its end: the ended run.
    async fn follow(&self, run_id: &str) -> pb::SyncRun {
        let request = pb::WatchSyncRunRequest {
            run_id: run_id.to_owned(),
        };
        let mut stream = self
            .directory
            .clone()
            .watch_sync_run(request)
            .await
            .unwrap()
            .into_inner();
        let mut last = None;
        while let Some(update) = stream.message().await.unwrap() {
            last = update.run;
        }
        last.unwrap()
    }
}

test_support::on_both_backends! {
    async fn the_first_round_waits_for_import_worker_to_come_up(db) {
        let stack = WithoutImporter::start(&db, 120).await;
        // The start-up round reads the directory, then waits for import-worker (the role rules
        // go through it) rather than failing.
        let reading = loop {
            let run = stack.last_round().await;
            assert_eq!(run.status(), pb::SyncRunStatus::Running, "{run:?}");
            if run.users_seen == 40 {
                break run;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        tokio::time::sleep(Duration::from_secs(2)).await;
        let waiting = stack.last_round().await;
        assert_eq!((waiting.run_id.as_str(), waiting.status()), (reading.run_id.as_str(), pb::SyncRunStatus::Running), "{}", waiting.error);

        stack.start_importer().await;
        let run = stack.follow(&reading.run_id).await;
        assert_eq!(run.status(), pb::SyncRunStatus::Succeeded, "{}", run.error);
        assert_eq!(run.users_seen, 40);
    }

    async fn a_round_whose_import_worker_does_not_come_up_fails_naming_import_worker(db) {
        let stack = WithoutImporter::start(&db, 1).await;
        let first = stack.last_round().await;
        let run = stack.follow(&first.run_id).await;
        assert_eq!(run.status(), pb::SyncRunStatus::Failed);
        assert!(run.error.starts_with("import-worker unavailable"), "{}", run.error);
        assert!(!run.error.contains("user-registry"), "{}", run.error);

        // The CLI follows a round that fails the same way, says why, and exits non-zero.
        let output = Command::new(env!("CARGO_BIN_EXE_userimport"))
            .args(["directory", "sync"])
            // No developer's profile (current company, dev token) leaks in.
            .env("USERIMPORT_PROFILE", std::env::temp_dir().join("userimport-no-profile.json"))
            .env("USERIMPORT_DIRECTORY_URL", &stack.directory_url)
            .env("USERIMPORT_REGISTRY_URL", &stack.registry_url)
            .env("USERIMPORT_IMPORTER_URL", format!("http://{}", stack.importer_addr))
            .output()
            .unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("import-worker unavailable"), "{stderr}");
    }
}
