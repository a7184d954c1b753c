//! A whole batch-import cluster for tests: the Graph emulator, user-registry and
//! directory-sync in this process on Postgres, RabbitMQ under a unique prefix, and
//! import-worker replicas as separate processes of the real binary (so one can be killed).

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use graph_emulator::{Emulator, EmulatorConfig};
use import_worker::queue::{ChunkQueue, Lane, Message, QueueConfig, RabbitQueue};
use proto::directory::v1 as directory_pb;
use proto::importer::v1 as pb;
use proto::importer::v1::importer_service_client::ImporterServiceClient;
use service_runtime::storage::Database;
use test_support::TestDatabase;

use lapin::options::{BasicGetOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;

use crate::rabbit::Vhost;
use tokio_util::sync::{CancellationToken, DropGuard};
use tonic::transport::Channel;

/// An import-worker process.
pub(crate) struct Worker {
    pub(crate) name: String,
    pub(crate) port: u16,
    child: Child,
}

impl Worker {
    /// SIGKILL: the process dies between any two instructions.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends `signal` (`STOP`, `CONT`, …) to the process.
    pub(crate) fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{signal} failed");
    }

    /// SIGTERM, as a rolling deploy sends it; waits until the process exited, successfully.
    pub(crate) fn terminate(&mut self) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -TERM failed");
        let exited = self.child.wait().unwrap();
        assert!(
            exited.success(),
            "worker {} exited with {exited}",
            self.name
        );
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Settings of the worker processes.
#[derive(Clone)]
pub(crate) struct WorkerSettings {
    pub(crate) chunk_size: u32,
    pub(crate) lease_secs: u64,
    pub(crate) delivery_limit: u32,
    pub(crate) batch_groups: Vec<String>,
    /// AMQP heartbeat of the worker processes.
    pub(crate) heartbeat_secs: u16,
    /// How long a worker retries a chunk failing for a passing cause before requeueing it.
    pub(crate) chunk_retry_hold_secs: u64,
    /// directory-sync as a process of its own (so it can be killed) instead of in this one.
    pub(crate) directory_process: bool,
    /// directory-sync's `sync.groups`; with one, "every user" means its members.
    pub(crate) sync_groups: Vec<String>,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            chunk_size: 200,
            lease_secs: 2,
            delivery_limit: 3,
            batch_groups: vec!["default".to_owned()],
            heartbeat_secs: 10,
            chunk_retry_hold_secs: 120,
            directory_process: false,
            sync_groups: Vec::new(),
        }
    }
}

/// directory-sync run as a process: this test binary running `child_directory_sync`, which
/// serves the real service from `DIRECTORY_SYNC_*` variables as its binary does.
pub(crate) struct DirectoryProcess {
    port: u16,
    env: Vec<(String, String)>,
    log: std::path::PathBuf,
    child: Option<Child>,
}

impl DirectoryProcess {
    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "child_directory_sync",
                "--ignored",
                "--nocapture",
            ])
            .env("USERIMPORT_TEST_CHILD", "directory-sync")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// Waits until the process serves gRPC.
    async fn wait_serving(&self) {
        let started = Instant::now();
        while service_runtime::grpc::probe(std::net::SocketAddr::from(([127, 0, 0, 1], self.port)))
            .await
            .is_err()
        {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "directory-sync did not start; its log: {}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for DirectoryProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

pub(crate) struct Cluster {
    pub(crate) emulator: Emulator,
    pub(crate) registry_db: Database,
    pub(crate) importer_db_url: String,
    pub(crate) directory_url: String,
    pub(crate) registry_url: String,
    pub(crate) prefix: String,
    pub(crate) settings: WorkerSettings,
    pub(crate) workers: Vec<Worker>,
    /// directory-sync, when it runs as a process of its own.
    directory_process: Option<DirectoryProcess>,
    _databases: Vec<TestDatabase>,
    _guards: Vec<DropGuard>,
    /// The cluster's own virtual host (closing its connections leaves other tests alone);
    /// last, so it goes after the workers.
    pub(crate) vhost: Vhost,
}

/// The synced group "Engineering": 15 users (10 direct, 5 more through a nested group).
pub(crate) const ENGINEERING: &str = graph_emulator::SYNTHETIC_GROUP_IDS[1];

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Cluster {
    /// The cluster without workers, or `None` when Postgres or RabbitMQ is not configured.
    pub(crate) async fn start(users: usize, settings: WorkerSettings) -> Option<Self> {
        let amqp_url = test_support::amqp_url_or_skip()?;
        let registry_db = TestDatabase::postgres().await?;
        let directory_db = TestDatabase::postgres().await?;
        let importer_db = TestDatabase::postgres().await?;
        let emulator = Emulator::start(
            EmulatorConfig::synthetic_with_groups(users),
            tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        )
        .await
        .unwrap();

        let registry_database = Database::connect(&registry_db.url, 8).await.unwrap();
        registry_database
            .migrate(&user_registry::store::MIGRATIONS)
            .await
            .unwrap();
        let registry = user_registry::App::build(
            &user_registry::Config::local(&registry_db.url),
            registry_database.clone(),
            tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        )
        .await
        .unwrap();
        let registry_url = format!("http://{}", registry.local_addr());
        let registry_shutdown = CancellationToken::new();
        tokio::spawn(registry.run(registry_shutdown.clone()));

        let base = emulator
            .base_url()
            .as_str()
            .trim_end_matches('/')
            .to_owned();
        let mut guards = vec![registry_shutdown.drop_guard()];
        let mut directory_process = None;
        let directory_url = if settings.directory_process {
            let port = free_port();
            let env = [
                ("DIRECTORY_SYNC_LISTEN_ADDR", format!("127.0.0.1:{port}")),
                ("DIRECTORY_SYNC_REGISTRY_URL", registry_url.clone()),
                // No import-worker is asked: no auto-import, no rules.
                (
                    "DIRECTORY_SYNC_IMPORTER_URL",
                    format!("http://127.0.0.1:{}", free_port()),
                ),
                (
                    "DIRECTORY_SYNC_PROVISIONING__APPLY_ROLE_RULES",
                    "false".to_owned(),
                ),
                (
                    "DIRECTORY_SYNC_PROVISIONING__AUTO_IMPORT",
                    "false".to_owned(),
                ),
                ("DIRECTORY_SYNC_DATABASE__URL", directory_db.url.clone()),
                (
                    "DIRECTORY_SYNC_AUTH__INSECURE_DEVELOPMENT",
                    "true".to_owned(),
                ),
                ("DIRECTORY_SYNC_DIRECTORY__CLOUD", "global".to_owned()),
                ("DIRECTORY_SYNC_DIRECTORY__AUTHORITY_HOST", base.clone()),
                ("DIRECTORY_SYNC_DIRECTORY__GRAPH_HOST", base.clone()),
                (
                    "DIRECTORY_SYNC_DIRECTORY__TENANT_ID",
                    emulator.tenant_id().to_owned(),
                ),
                (
                    "DIRECTORY_SYNC_DIRECTORY__CLIENT_ID",
                    emulator.client_id().to_owned(),
                ),
                (
                    "DIRECTORY_SYNC_DIRECTORY__CLIENT_SECRET",
                    emulator.client_secret().to_owned(),
                ),
                (
                    "DIRECTORY_SYNC_DIRECTORY__RESOURCE_UNITS_PER_10S",
                    "0".to_owned(),
                ),
                (
                    "DIRECTORY_SYNC_SYNC__GROUPS",
                    format!(
                        "[{}]",
                        settings
                            .sync_groups
                            .iter()
                            .map(|g| format!("{g:?}"))
                            .collect::<Vec<_>>()
                            .join(",")
                    ),
                ),
                ("DIRECTORY_SYNC_SYNC__DELTA_INTERVAL_SECS", "0".to_owned()),
                ("DIRECTORY_SYNC_LOG__FORMAT", "json".to_owned()),
                ("RUST_LOG", "info,sqlx=warn".to_owned()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
            let mut process = DirectoryProcess {
                port,
                env,
                log: std::env::temp_dir().join(format!(
                    "{}-directory-sync.log",
                    uuid::Uuid::new_v4().simple()
                )),
                child: None,
            };
            process.spawn();
            process.wait_serving().await;
            // The tenant's first full round runs at start-up.
            let database = Database::connect(&directory_db.url, 1).await.unwrap();
            let started = Instant::now();
            loop {
                let seen: Option<i64> = sqlx::query_scalar(
                    "SELECT users_seen FROM sync_runs WHERE mode = 'full' AND status = 'succeeded'",
                )
                .fetch_optional(database.pool())
                .await
                .unwrap();
                if let Some(seen) = seen {
                    assert_eq!(seen, users as i64);
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(120),
                    "directory-sync's first round did not succeed"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            database.close().await;
            directory_process = Some(process);
            format!("http://127.0.0.1:{port}")
        } else {
            let directory_database = Database::connect(&directory_db.url, 8).await.unwrap();
            directory_database
                .migrate(&directory_sync::store::MIGRATIONS)
                .await
                .unwrap();
            let directory_config = directory_sync::Config::local(
                &directory_db.url,
                &registry_url,
                directory_sync::config::DirectoryConfig::single_host(
                    &base,
                    emulator.tenant_id(),
                    emulator.client_id(),
                    emulator.client_secret(),
                ),
            );
            let mut directory_config = directory_config;
            directory_config.sync.groups = settings.sync_groups.clone();
            let graph = graph::GraphClient::new(directory_config.directory.graph_config().unwrap())
                .unwrap();
            let directory = directory_sync::App::build(
                &directory_config,
                directory_database,
                tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
                graph,
            )
            .await
            .unwrap();
            let directory_url = format!("http://{}", directory.local_addr());
            let run = directory
                .directory()
                .sync_now(directory_sync::domain::SyncMode::Full, false)
                .await
                .unwrap()
                .0;
            assert_eq!(run.users_seen, users as u64, "{}", run.error);
            let directory_shutdown = CancellationToken::new();
            tokio::spawn(directory.run(directory_shutdown.clone()));
            guards.push(directory_shutdown.drop_guard());
            directory_url
        };

        // The job database is created and migrated once, before the replicas share it.
        let importer_database = Database::connect(&importer_db.url, 2).await.unwrap();
        importer_database
            .migrate(&import_worker::store::MIGRATIONS)
            .await
            .unwrap();
        importer_database.close().await;

        Some(Self {
            emulator,
            registry_db: registry_database,
            importer_db_url: importer_db.url.clone(),
            directory_url,
            registry_url,
            vhost: Vhost::create(&amqp_url).await,
            prefix: format!("test-{}", uuid::Uuid::new_v4().simple()),
            settings,
            workers: Vec::new(),
            directory_process,
            _databases: vec![registry_db, directory_db, importer_db],
            _guards: guards,
        })
    }

    /// Starts an import-worker process named `name` (its planning leases carry the name).
    pub(crate) async fn spawn_worker(&mut self, name: &str) -> usize {
        let port = free_port();
        let log =
            std::fs::File::create(std::env::temp_dir().join(format!("{}-{name}.log", self.prefix)))
                .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_import-worker"))
            .env("HOSTNAME", name)
            .env("IMPORT_WORKER_LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env("IMPORT_WORKER_DATABASE__URL", &self.importer_db_url)
            .env("IMPORT_WORKER_AUTH__INSECURE_DEVELOPMENT", "true")
            .env("IMPORT_WORKER_METRICS__LISTEN_ADDR", "127.0.0.1:0")
            .env("IMPORT_WORKER_DIRECTORY_URL", &self.directory_url)
            .env("IMPORT_WORKER_REGISTRY_URL", &self.registry_url)
            .env("IMPORT_WORKER_QUEUE__KIND", "amqp")
            .env("IMPORT_WORKER_QUEUE__URL", &self.vhost.url)
            .env("IMPORT_WORKER_QUEUE__PREFIX", &self.prefix)
            .env(
                "IMPORT_WORKER_QUEUE__DELIVERY_LIMIT",
                self.settings.delivery_limit.to_string(),
            )
            .env(
                "IMPORT_WORKER_WORKER__CHUNK_SIZE",
                self.settings.chunk_size.to_string(),
            )
            .env(
                "IMPORT_WORKER_WORKER__PLANNING_LEASE_SECS",
                self.settings.lease_secs.to_string(),
            )
            .env(
                "IMPORT_WORKER_WORKER__BATCH_GROUPS",
                format!(
                    "[{}]",
                    self.settings
                        .batch_groups
                        .iter()
                        .map(|g| format!("{g:?}"))
                        .collect::<Vec<_>>()
                        .join(",")
                ),
            )
            .env(
                "IMPORT_WORKER_QUEUE__HEARTBEAT_SECS",
                self.settings.heartbeat_secs.to_string(),
            )
            .env(
                "IMPORT_WORKER_WORKER__CHUNK_RETRY_HOLD_SECS",
                self.settings.chunk_retry_hold_secs.to_string(),
            )
            .env("IMPORT_WORKER_LOG__FORMAT", "json")
            .env("RUST_LOG", "info,sqlx=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let started = Instant::now();
        while service_runtime::grpc::probe(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
            .await
            .is_err()
        {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "worker {name} did not start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.workers.push(Worker {
            name: name.to_owned(),
            port,
            child,
        });
        self.workers.len() - 1
    }

    /// SIGKILLs the directory-sync process.
    pub(crate) fn kill_directory(&mut self) {
        self.directory_process
            .as_mut()
            .expect("directory-sync runs as a process")
            .kill();
    }

    /// Starts the directory-sync process again, on the same port and database.
    pub(crate) async fn restart_directory(&mut self) {
        let process = self
            .directory_process
            .as_mut()
            .expect("directory-sync runs as a process");
        process.spawn();
        process.wait_serving().await;
    }

    /// A client of the worker at `index`, acting as `principal`.
    pub(crate) async fn client(&self, index: usize) -> ImporterServiceClient<Channel> {
        ImporterServiceClient::connect(format!("http://127.0.0.1:{}", self.workers[index].port))
            .await
            .unwrap()
    }

    /// Starts a batch import of every user into DAT through worker `index`.
    pub(crate) async fn start_job(
        &self,
        index: usize,
        principal: &str,
        options: pb::BatchOptions,
    ) -> pb::Job {
        self.start_scoped_job(index, principal, None, options).await
    }

    /// Starts a batch import into DAT of every user, or of `group`'s members, through worker
    /// `index`.
    pub(crate) async fn start_scoped_job(
        &self,
        index: usize,
        principal: &str,
        group: Option<&str>,
        options: pb::BatchOptions,
    ) -> pb::Job {
        let scope = Some(directory_pb::Scope {
            scope: Some(match group {
                Some(group) => directory_pb::scope::Scope::GroupId(group.to_owned()),
                None => directory_pb::scope::Scope::All(directory_pb::AllUsers {}),
            }),
        });
        let request = pb::StartBatchImportRequest {
            company: "DAT".into(),
            scope,
            options: Some(options),
            dry_run: false,
        };
        let mut request = tonic::Request::new(request);
        request
            .metadata_mut()
            .insert("x-userimport-principal", principal.parse().unwrap());
        self.client(index)
            .await
            .start_batch_import(request)
            .await
            .unwrap()
            .into_inner()
            .job
            .unwrap()
    }

    pub(crate) async fn job(&self, index: usize, job_id: &str) -> pb::Job {
        let request = pb::GetJobRequest {
            job_id: job_id.to_owned(),
        };
        self.client(index)
            .await
            .get_job(request)
            .await
            .unwrap()
            .into_inner()
            .job
            .unwrap()
    }

    /// Polls until `done` holds for the job, or fails after `timeout`.
    pub(crate) async fn wait_for(
        &self,
        index: usize,
        job_id: &str,
        timeout: Duration,
        done: impl Fn(&pb::Job) -> bool,
    ) -> pb::Job {
        let started = Instant::now();
        loop {
            let job = self.job(index, job_id).await;
            if done(&job) {
                return job;
            }
            assert!(
                started.elapsed() < timeout,
                "job did not get there in time: {job:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(crate) async fn wait_ended(&self, index: usize, job_id: &str) -> pb::Job {
        self.wait_for(index, job_id, Duration::from_secs(180), |job| {
            matches!(
                job.status(),
                pb::JobStatus::Completed | pb::JobStatus::Failed | pb::JobStatus::Cancelled
            )
        })
        .await
    }

    /// A listener on the job events exchange (call it once a worker has declared it).
    pub(crate) async fn listen_events(&self) -> EventListener {
        let connection =
            lapin::Connection::connect(&self.vhost.url, lapin::ConnectionProperties::default())
                .await
                .unwrap();
        let channel = connection.create_channel().await.unwrap();
        let queue = format!("{}.test-events", self.prefix);
        let exclusive = QueueDeclareOptions {
            exclusive: true,
            auto_delete: true,
            ..QueueDeclareOptions::default()
        };
        channel
            .queue_declare(queue.as_str().into(), exclusive, FieldTable::default())
            .await
            .unwrap();
        let exchange = QueueConfig {
            prefix: self.prefix.clone(),
            ..QueueConfig::default()
        }
        .events_exchange_name();
        channel
            .queue_bind(
                queue.as_str().into(),
                exchange.as_str().into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        EventListener {
            _connection: connection,
            channel,
            queue,
            seen: Vec::new(),
        }
    }

    /// What worker `name` logged (JSON lines).
    pub(crate) fn worker_log(&self, name: &str) -> String {
        std::fs::read_to_string(std::env::temp_dir().join(format!("{}-{name}.log", self.prefix)))
            .unwrap_or_default()
    }

    /// The planning lease of a job: its owner, and when it expires (0: handed back).
    pub(crate) async fn lease(&self, job_id: &str) -> (String, i64) {
        let database = Database::connect(&self.importer_db_url, 1).await.unwrap();
        let row: (String, i64) =
            sqlx::query_as("SELECT lease_owner, lease_expires_at_ms FROM jobs WHERE job_id = $1")
                .bind(job_id)
                .fetch_one(database.pool())
                .await
                .unwrap();
        database.close().await;
        row
    }

    /// The worker holding a job's planning lease.
    pub(crate) async fn planner_of(&self, job_id: &str) -> usize {
        let (owner, _) = self.lease(job_id).await;
        self.workers
            .iter()
            .position(|w| owner.starts_with(&format!("{}-", w.name)))
            .unwrap()
    }

    /// How many of a job's chunks were processed within `[from_ms, to_ms]`.
    pub(crate) async fn chunks_processed_between(
        &self,
        job_id: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> i64 {
        let database = Database::connect(&self.importer_db_url, 1).await.unwrap();
        let processed = sqlx::query_scalar(
            "SELECT COUNT(*) FROM job_chunks WHERE job_id = $1 AND state = 'done' AND processed_at_ms BETWEEN $2 AND $3",
        )
        .bind(job_id)
        .bind(from_ms)
        .bind(to_ms)
        .fetch_one(database.pool())
        .await
        .unwrap();
        database.close().await;
        processed
    }

    /// Registry users, and users per object id (must be 1 each).
    pub(crate) async fn registry_users(&self) -> (i64, i64) {
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(self.registry_db.pool())
            .await
            .unwrap();
        let distinct: i64 = sqlx::query_scalar("SELECT COUNT(DISTINCT object_id) FROM users")
            .fetch_one(self.registry_db.pool())
            .await
            .unwrap();
        (total, distinct)
    }

    /// The users a batch import of the whole tenant must create: all but guests without mail.
    pub(crate) fn importable_users(&self) -> i64 {
        self.emulator
            .users()
            .iter()
            .filter(|u| !(u.user_type == "Guest" && u.mail.is_none()))
            .count() as i64
    }

    /// Publishes a message that no worker can read to `group`'s normal lane, naming `job_id`.
    pub(crate) async fn publish_poison(&self, job_id: &str, group: &str) {
        let config = QueueConfig {
            prefix: self.prefix.clone(),
            delivery_limit: self.settings.delivery_limit,
            ..QueueConfig::default()
        };
        let queue = RabbitQueue::connect(&self.vhost.url, config).await.unwrap();
        let headers = BTreeMap::from([
            ("job_id".to_owned(), job_id.to_owned()),
            ("seq".to_owned(), "poison".to_owned()),
        ]);
        let message = Message {
            payload: b"\xff\xfe not a protobuf chunk".to_vec(),
            headers,
        };
        queue
            .publish(
                &Lane {
                    batch_group: group.to_owned(),
                    critical: false,
                },
                message,
            )
            .await
            .unwrap();
        queue.close().await;
    }
}

/// Asserts a job ended with exactly one registry user per importable directory user and
/// counts that add up.
pub(crate) async fn assert_exact(cluster: &Cluster, job: &pb::Job) {
    let counts = job.counts.unwrap();
    let users = cluster.emulator.users().len() as u64;
    assert_eq!(job.planned, users, "every user planned once");
    assert_eq!(
        counts.created + counts.already_present + counts.skipped + counts.failed,
        users,
        "counts add up: {counts:?}"
    );
    assert_eq!(
        job.chunks_done, job.chunks_planned,
        "every planned chunk processed"
    );
    let (total, distinct) = cluster.registry_users().await;
    assert_eq!(total, distinct, "one registry user per object id");
    assert_eq!(
        total,
        cluster.importable_users(),
        "every importable directory user is in the registry"
    );
    assert_eq!(
        counts.created as i64, total,
        "created counts the users created, once each"
    );
}

/// A queue of the test's own bound to the job events exchange with `#`.
pub(crate) struct EventListener {
    _connection: lapin::Connection,
    channel: lapin::Channel,
    queue: String,
    /// Events received so far: routing key and JSON body.
    seen: Vec<(String, serde_json::Value)>,
}

impl EventListener {
    /// The first `routing_key` event of `job_id`, waiting for it for at most 30 s.
    pub(crate) async fn wait_for(&mut self, routing_key: &str, job_id: &str) -> serde_json::Value {
        let started = Instant::now();
        loop {
            if let Some((_, event)) = self
                .seen
                .iter()
                .find(|(key, event)| key == routing_key && event["job_id"] == job_id)
            {
                return event.clone();
            }
            let got = self
                .channel
                .basic_get(self.queue.as_str().into(), BasicGetOptions { no_ack: true })
                .await
                .unwrap();
            match got {
                Some(got) => {
                    let event =
                        serde_json::from_slice(&got.delivery.data).expect("a job event is JSON");
                    self.seen
                        .push((got.delivery.routing_key.to_string(), event));
                }
                None => {
                    assert!(
                        started.elapsed() < Duration::from_secs(30),
                        "no {routing_key} event of {job_id}; saw {:?}",
                        self.seen
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}
