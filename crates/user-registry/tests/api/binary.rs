//! The `user-registry` binary itself: migrate, serve, healthcheck, graceful stop on SIGTERM.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use test_support::TestDatabase;

const BIN: &str = env!("CARGO_BIN_EXE_user-registry");

fn command(db: &TestDatabase, port: u16) -> Command {
    let mut command = Command::new(BIN);
    command
        .env("USER_REGISTRY_AUTH__INSECURE_DEVELOPMENT", "true")
        .env("USER_REGISTRY_METRICS__LISTEN_ADDR", "127.0.0.1:0")
        .env("USER_REGISTRY_DATABASE__URL", &db.url)
        .env("USER_REGISTRY_LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("USER_REGISTRY_LOG__FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

test_support::on_both_backends! {
    async fn without_authentication_configured_the_server_refuses_to_start_and_says_why(db) {
        let output = command(&db, free_port())
            .env_remove("USER_REGISTRY_AUTH__INSECURE_DEVELOPMENT")
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("no authentication configured") && stderr.contains("insecure_development"), "{stderr}");
    }

    async fn the_migrate_subcommand_creates_the_schema(db) {
        let status = command(&db, free_port()).arg("migrate").status().unwrap();
        assert!(status.success());
        let database = service_runtime::storage::Database::connect(&db.url, 1).await.unwrap();
        let companies: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM companies").fetch_one(database.pool()).await.unwrap();
        assert_eq!(companies, 1);
    }

    async fn the_server_answers_health_checks_and_stops_cleanly_on_sigterm(db) {
        let port = free_port();
        let mut server = command(&db, port).spawn().unwrap();
        let started = Instant::now();
        loop {
            let probe = command(&db, port).arg("healthcheck").status().unwrap();
            if probe.success() {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "server never became healthy");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let kill = Command::new("kill").args(["-TERM", &server.id().to_string()]).status().unwrap();
        assert!(kill.success());
        let status = tokio::task::spawn_blocking(move || server.wait()).await.unwrap().unwrap();
        assert!(status.success(), "exit status {status}");
        assert!(!command(&db, port).arg("healthcheck").status().unwrap().success());
    }
}
