use proto::registry::v1 as pb;
use proto::registry::v1::registry_service_client::RegistryServiceClient;
use service_runtime::storage::Database;
use test_support::TestDatabase;
use tokio_util::sync::{CancellationToken, DropGuard};
use tonic::transport::Channel;
use user_registry::{App, Config, store};

pub(crate) const TENANT: &str = "0a1b2c3d-0000-4000-8000-00000000feed";

pub(crate) struct TestApp {
    pub(crate) client: RegistryServiceClient<Channel>,
    pub(crate) db: Database,
    _guard: DropGuard,
}

impl TestApp {
    pub(crate) async fn spawn(db: &TestDatabase) -> Self {
        Self::spawn_with(Config::local(&db.url)).await
    }

    pub(crate) async fn spawn_with(config: Config) -> Self {
        let database = Database::connect(&config.database.url, 5).await.unwrap();
        database.migrate(&store::MIGRATIONS).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let app = App::build(&config, database.clone(), listener)
            .await
            .unwrap();
        let addr = app.local_addr();
        let shutdown = CancellationToken::new();
        tokio::spawn(app.run(shutdown.clone()));
        let client = RegistryServiceClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        Self {
            client,
            db: database,
            _guard: shutdown.drop_guard(),
        }
    }

    pub(crate) async fn import(
        &self,
        import_id: &str,
        company: &str,
        users: Vec<pb::NewUser>,
    ) -> Result<Vec<pb::ImportOutcome>, tonic::Status> {
        let request = pb::ImportUsersRequest {
            import_id: import_id.into(),
            company: company.into(),
            users,
            dry_run: false,
            private: false,
        };
        Ok(self
            .client
            .clone()
            .import_users(request)
            .await?
            .into_inner()
            .outcomes)
    }

    /// Waits until every transaction on the database server that began before this call has
    /// ended. The Postgres import feed shows a change only once every older transaction has
    /// ended (store::feed), and other tests share the server.
    pub(crate) async fn settle(&self) {
        if self.db.backend() != service_runtime::storage::Backend::Postgres {
            return;
        }
        let now: i64 = sqlx::query_scalar("SELECT pg_current_xact_id()::text::bigint")
            .fetch_one(self.db.pool())
            .await
            .unwrap();
        for _ in 0..1000 {
            let oldest: i64 =
                sqlx::query_scalar("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
                    .fetch_one(self.db.pool())
                    .await
                    .unwrap();
            if oldest > now {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("a transaction older than {now} stayed open for 10 s");
    }

    pub(crate) async fn user_count(&self) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(self.db.pool())
            .await
            .unwrap()
    }
}

/// A member whose object id is derived from `n`.
pub(crate) fn member(n: u32, upn: &str) -> pb::NewUser {
    pb::NewUser {
        tenant_id: TENANT.into(),
        object_id: object_id(n),
        network_alias: upn.into(),
        network_domain: "https://sts.windows.net/".into(),
        email: upn.into(),
        name: format!("User {n}"),
        enabled: true,
        account_type: pb::AccountType::Member.into(),
    }
}

pub(crate) fn object_id(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012x}")
}

pub(crate) fn kinds(outcomes: &[pb::ImportOutcome]) -> Vec<pb::OutcomeKind> {
    outcomes.iter().map(|o| o.kind()).collect()
}
