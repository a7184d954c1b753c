//! Every service in one process: what `userimport dev` and `demo` run, and what the end-to-end
//! tests start. Each service keeps its own database (three SQLite files, or three schemas of
//! one Postgres database), exactly as when deployed apart; only the process is shared.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use directory_sync::config::DirectoryConfig;
use graph_emulator::{Emulator, EmulatorConfig};
use secrecy::SecretString;
use service_runtime::auth::{self, AuthConfig};
use service_runtime::storage::{Database, Migrations};
use sqlx::{Connection as _, Executor as _};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Where the three services keep their data.
#[derive(Debug, Clone)]
pub enum Storage {
    /// One SQLite file per service in this folder (the embedded default).
    Sqlite(PathBuf),
    /// One schema per service (`<prefix>_directory`, `_registry`, `_importer`) on this server.
    Postgres { url: String, schema_prefix: String },
}

/// Which directory the stack reads.
#[derive(Debug, Clone)]
pub enum DirectorySource {
    /// The built-in Graph emulator with a synthetic tenant of this many users, and its
    /// synthetic groups (`graph_emulator::SYNTHETIC_GROUP_IDS`: All Staff, Engineering,
    /// Platform, Empty).
    Emulator { users: usize },
    /// A real tenant (or any Graph endpoint).
    Graph(Box<DirectoryConfig>),
    /// A tenant that pushes over SCIM (`scim.enabled`): directory-sync serves the SCIM
    /// endpoint on this loopback port (0 picks a free one) and reads no Graph.
    Scim { tenant_id: String, port: u16 },
}

/// Ports of the three services; 0 picks free ones.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub directory: u16,
    pub registry: u16,
    pub importer: u16,
}

impl Ports {
    /// The ports the CLI talks to by default.
    pub const DEFAULT: Ports = Ports {
        directory: 50051,
        registry: 50052,
        importer: 50053,
    };
    /// Free ports chosen by the system (tests).
    pub const ANY: Ports = Ports {
        directory: 0,
        registry: 0,
        importer: 0,
    };
}

/// What to start.
#[derive(Debug, Clone)]
pub struct StackOptions {
    pub storage: Storage,
    pub directory: DirectorySource,
    pub ports: Ports,
    /// Companies created in the registry besides DAT.
    pub companies: Vec<(String, String)>,
    /// Users per batch-import chunk.
    pub chunk_size: u32,
    /// How the services authenticate their callers and each other.
    pub auth: StackAuth,
    /// directory-sync imports users that appear in the directory after each round.
    pub auto_import: bool,
    /// Groups whose members directory-sync mirrors (`sync.groups`); they scope listings and
    /// imports and are the groups group-to-role rules can name.
    pub sync_groups: Vec<String>,
    /// Seconds between scheduled delta rounds (0: none).
    pub delta_interval_secs: u64,
    /// Serve the web console on this loopback port (0 picks a free one); `None`: no console.
    pub console: Option<u16>,
}

/// How the services of a stack authenticate.
#[derive(Debug, Clone)]
pub enum StackAuth {
    /// Every service in insecure development mode: callers name themselves.
    Insecure,
    /// Local static tokens: one for the administrator, one per calling service.
    Local(LocalTokens),
    /// These settings, per service (tests of authentication itself).
    Custom(Box<ServiceAuth>),
}

/// The authentication settings of each service of a stack.
#[derive(Debug, Clone)]
pub struct ServiceAuth {
    pub registry: AuthConfig,
    pub directory: AuthConfig,
    pub importer: AuthConfig,
}

/// Tokens of a local stack (`userimport dev`): generated at random on every start.
#[derive(Debug, Clone)]
pub struct LocalTokens {
    pub admin: SecretString,
    pub import_worker: SecretString,
    pub directory_sync: SecretString,
    /// More people, so `--as` can show what another administrator or a reader sees (private
    /// jobs, read-only access): (principal, role, token).
    pub people: Vec<(String, &'static str, SecretString)>,
}

/// The people `userimport dev` knows besides `admin`: two more administrators and a reader.
pub use crate::profile::DEV_PEOPLE;

impl LocalTokens {
    pub fn generate() -> anyhow::Result<Self> {
        Ok(Self {
            admin: auth::random_token()?,
            import_worker: auth::random_token()?,
            directory_sync: auth::random_token()?,
            people: DEV_PEOPLE
                .iter()
                .map(|(name, role)| Ok(((*name).to_owned(), *role, auth::random_token()?)))
                .collect::<anyhow::Result<_>>()?,
        })
    }

    /// What each service accepts (all three tokens, each with its own roles), presenting
    /// `outbound` to the services it calls.
    fn config(&self, outbound: Option<&SecretString>) -> AuthConfig {
        let token = |principal: &str, role: &str, token: &SecretString| auth::StaticToken {
            principal: principal.to_owned(),
            roles: vec![role.to_owned()],
            token: Some(token.clone()),
            token_file: None,
        };
        AuthConfig {
            static_tokens: [
                token("admin", auth::ADMIN, &self.admin),
                token("import-worker", auth::IMPORT_WORKER, &self.import_worker),
                token("directory-sync", auth::DIRECTORY_SYNC, &self.directory_sync),
            ]
            .into_iter()
            .chain(
                self.people
                    .iter()
                    .map(|(name, role, secret)| token(name, role, secret)),
            )
            .collect(),
            outbound: outbound
                .map(|t| auth::TokenSource::inline(t.clone()))
                .unwrap_or_default(),
            ..AuthConfig::default()
        }
    }
}

impl StackAuth {
    /// How people sign in to the stack's console: a button per local person (their tokens
    /// stay in this process), or a pasted token for custom settings.
    fn console_sign_in(&self) -> admin_console::config::SignInConfig {
        use admin_console::config::{DevPerson, SignInConfig};
        match self {
            StackAuth::Insecure => SignInConfig {
                oidc: None,
                token_form: false,
                dev_people: vec![DevPerson {
                    principal: "admin".to_owned(),
                    token: None,
                }],
            },
            StackAuth::Local(tokens) => SignInConfig {
                oidc: None,
                token_form: true,
                dev_people: std::iter::once(DevPerson {
                    principal: "admin".to_owned(),
                    token: Some(tokens.admin.clone()),
                })
                .chain(tokens.people.iter().map(|(name, _, token)| DevPerson {
                    principal: name.clone(),
                    token: Some(token.clone()),
                }))
                .collect(),
            },
            StackAuth::Custom(_) => SignInConfig {
                oidc: None,
                token_form: true,
                dev_people: Vec::new(),
            },
        }
    }

    /// The settings of (registry, directory-sync, import-worker).
    fn configs(&self) -> (AuthConfig, AuthConfig, AuthConfig) {
        match self {
            StackAuth::Insecure => {
                let insecure = AuthConfig {
                    insecure_development: true,
                    ..AuthConfig::default()
                };
                (insecure.clone(), insecure.clone(), insecure)
            }
            StackAuth::Local(tokens) => (
                tokens.config(None),
                tokens.config(Some(&tokens.directory_sync)),
                tokens.config(Some(&tokens.import_worker)),
            ),
            StackAuth::Custom(each) => (
                each.registry.clone(),
                each.directory.clone(),
                each.importer.clone(),
            ),
        }
    }
}

/// A running stack. Dropping it stops every service.
pub struct Stack {
    pub directory_url: String,
    pub registry_url: String,
    pub importer_url: String,
    /// The Prometheus endpoint (every service of the stack shares the process's recorder).
    pub metrics_url: String,
    /// The web console, when asked for (`http://127.0.0.1:port`).
    pub console_url: Option<String>,
    /// The SCIM endpoint of a pushed tenant (`…/scim/v2`).
    pub scim_url: Option<String>,
    /// The emulator, when the stack reads one.
    pub emulator: Option<Emulator>,
    /// The directory-sync use cases, to run the first sync in-process.
    pub directory: directory_sync::service::Directory,
    shutdown: CancellationToken,
    tasks: JoinSet<anyhow::Result<()>>,
}

async fn bind(port: u16) -> anyhow::Result<TcpListener> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (is another `userimport dev` running?)"))
}

fn url_of(listener: &TcpListener) -> anyhow::Result<String> {
    Ok(format!("http://{}", listener.local_addr()?))
}

/// The services of a stack, by the name their database carries.
const SERVICES: [&str; 3] = ["directory", "registry", "importer"];

impl Storage {
    fn postgres_schema(prefix: &str, service: &str) -> String {
        format!("{prefix}_{service}").replace('-', "_")
    }

    /// Deletes every service's data (a throw-away stack such as `demo`'s).
    pub async fn discard(&self) -> anyhow::Result<()> {
        match self {
            Storage::Sqlite(dir) => {
                if dir.exists() {
                    std::fs::remove_dir_all(dir)
                        .with_context(|| format!("cannot remove {}", dir.display()))?;
                }
            }
            Storage::Postgres { url, schema_prefix } => {
                let mut conn = sqlx::PgConnection::connect(url)
                    .await
                    .context("cannot connect to Postgres")?;
                for service in SERVICES {
                    let schema = Self::postgres_schema(schema_prefix, service);
                    conn.execute(sqlx::AssertSqlSafe(format!(
                        "DROP SCHEMA IF EXISTS {schema} CASCADE"
                    )))
                    .await?;
                }
            }
        }
        Ok(())
    }

    /// Connects to (and migrates) the database of one service; answers it and its URL.
    pub async fn database(
        &self,
        service: &str,
        migrations: &Migrations,
    ) -> anyhow::Result<(Database, String)> {
        let url = match self {
            Storage::Sqlite(dir) => {
                format!("sqlite://{}", dir.join(format!("{service}.db")).display())
            }
            Storage::Postgres { url, schema_prefix } => {
                let schema = Self::postgres_schema(schema_prefix, service);
                let mut conn = sqlx::PgConnection::connect(url)
                    .await
                    .context("cannot connect to Postgres")?;
                conn.execute(sqlx::AssertSqlSafe(format!(
                    "CREATE SCHEMA IF NOT EXISTS {schema}"
                )))
                .await?;
                let separator = if url.contains('?') { '&' } else { '?' };
                format!("{url}{separator}options=-c%20search_path%3D{schema}")
            }
        };
        let db = Database::connect(&url, 5).await?;
        db.migrate(migrations)
            .await
            .with_context(|| format!("migrations of {service}"))?;
        Ok((db, url))
    }
}

impl Stack {
    /// Starts the emulator (when asked), user-registry, directory-sync and import-worker,
    /// each on its own loopback port and database. Returns once all of them accept calls.
    pub async fn start(options: StackOptions) -> anyhow::Result<Self> {
        service_runtime::install_crypto_provider();
        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();

        let (emulator, directory_config) = match &options.directory {
            DirectorySource::Emulator { users } => {
                let emulator = Emulator::start(
                    EmulatorConfig::synthetic_with_groups(*users),
                    bind(0).await?,
                )
                .await?;
                let base = emulator
                    .base_url()
                    .as_str()
                    .trim_end_matches('/')
                    .to_owned();
                let config = DirectoryConfig::single_host(
                    &base,
                    emulator.tenant_id(),
                    emulator.client_id(),
                    emulator.client_secret(),
                );
                (Some(emulator), config)
            }
            DirectorySource::Graph(config) => (None, (**config).clone()),
            // No Graph behind a pushed tenant: its credentials are never used.
            DirectorySource::Scim { tenant_id, .. } => (
                None,
                DirectoryConfig::single_host("http://127.0.0.1:9", tenant_id, "unused", "unused"),
            ),
        };

        let registry_listener = bind(options.ports.registry).await?;
        let directory_listener = bind(options.ports.directory).await?;
        let importer_listener = bind(options.ports.importer).await?;
        let registry_url = url_of(&registry_listener)?;
        let directory_url = url_of(&directory_listener)?;
        let importer_url = url_of(&importer_listener)?;

        let (registry_db, registry_db_url) = options
            .storage
            .database("registry", &user_registry::store::MIGRATIONS)
            .await?;
        let (registry_auth, directory_auth, importer_auth) = options.auth.configs();
        let mut registry_config = user_registry::Config::local(&registry_db_url);
        registry_config.auth = registry_auth;
        registry_config.companies = options
            .companies
            .iter()
            .map(|(code, name)| user_registry::config::CompanyConfig {
                code: code.clone(),
                name: name.clone(),
            })
            .collect();
        let registry =
            user_registry::App::build(&registry_config, registry_db, registry_listener).await?;
        tasks.spawn(registry.run(shutdown.clone()));

        let (directory_db, directory_db_url) = options
            .storage
            .database("directory", &directory_sync::store::MIGRATIONS)
            .await?;
        let mut directory_config =
            directory_sync::Config::local(&directory_db_url, &registry_url, directory_config);
        directory_config.auth = directory_auth;
        directory_config.importer_url = importer_url.clone();
        directory_config.provisioning.auto_import = options.auto_import;
        directory_config.sync.groups = options.sync_groups.clone();
        directory_config.sync.delta_interval_secs = options.delta_interval_secs;
        if let DirectorySource::Scim { port, .. } = &options.directory {
            directory_config.scim.enabled = true;
            directory_config.scim.listen_addr = SocketAddr::from(([127, 0, 0, 1], *port));
        }
        let graph = graph::GraphClient::new(directory_config.directory.graph_config()?)
            .context("invalid directory settings")?;
        let directory =
            directory_sync::App::build(&directory_config, directory_db, directory_listener, graph)
                .await?;
        let directory_service = directory.directory();
        let scim_url = directory
            .scim_addr()
            .map(|addr| format!("http://{addr}/scim/v2"));
        tasks.spawn(directory.run(shutdown.clone()));

        let (importer_db, importer_db_url) = options
            .storage
            .database("importer", &import_worker::store::MIGRATIONS)
            .await?;
        let mut importer_config =
            import_worker::Config::local(&importer_db_url, &directory_url, &registry_url);
        importer_config.worker.chunk_size = options.chunk_size;
        // One process serves every batch group a job may name (no job waits for a worker).
        importer_config.worker.batch_groups = vec![import_worker::queue::EVERY_GROUP.to_owned()];
        importer_config.auth = importer_auth;
        // One recorder per process: this endpoint shows every service of the stack.
        importer_config.metrics.listen_addr = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        // The embedded default: an in-process queue with the broker's semantics.
        let queue = import_worker::app::connect_queue(&importer_config.queue).await?;
        let importer =
            import_worker::App::build(&importer_config, importer_db, importer_listener, queue)
                .await?;
        let metrics_url = importer
            .metrics_addr()
            .map(|addr| format!("http://{addr}/metrics"))
            .context("the stack's metrics endpoint did not start")?;
        tasks.spawn(importer.run(shutdown.clone()));

        let console_url = match options.console {
            Some(port) => {
                let listener = bind(port).await?;
                let url = url_of(&listener)?;
                let mut config =
                    admin_console::Config::local(&directory_url, &registry_url, &importer_url)?;
                // The console verifies a person's token as the services do.
                config.auth = options.auth.configs().0;
                config.sign_in = options.auth.console_sign_in();
                let console = admin_console::App::build(config, listener).await?;
                tasks.spawn(console.run(shutdown.clone()));
                Some(url)
            }
            None => None,
        };

        Ok(Self {
            directory_url,
            registry_url,
            importer_url,
            console_url,
            scim_url,
            metrics_url,
            emulator,
            directory: directory_service,
            shutdown,
            tasks,
        })
    }

    /// Cancels every service and waits for them to finish their in-flight calls.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        while let Some(result) = self.tasks.join_next().await {
            result.context("service task panicked")??;
        }
        Ok(())
    }

    /// Resolves when any service stops on its own (an error), or never.
    pub async fn any_stopped(&mut self) -> anyhow::Result<()> {
        match self.tasks.join_next().await {
            Some(result) => result.context("service task panicked")?,
            None => std::future::pending().await,
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
