#![allow(clippy::unwrap_used, clippy::expect_used)]

mod batch;
mod cluster;
mod faults;
mod job_store;
mod queue;
mod rabbit;

/// Not a test: this binary, run by `cluster::DirectoryProcess` with `--exact
/// child_directory_sync --ignored`, is directory-sync, configured from `DIRECTORY_SYNC_*`
/// variables and served as its binary serves it, so a test can SIGKILL it.
#[test]
#[ignore = "runs only as the cluster tests' directory-sync process"]
fn child_directory_sync() {
    if std::env::var_os("USERIMPORT_TEST_CHILD").is_none() {
        return;
    }
    test_support::init();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime
        .block_on(async {
            let config = directory_sync::Config::load(None).expect("configuration");
            service_runtime::run_command(
                None,
                config.listen_addr,
                &config.database,
                &directory_sync::store::MIGRATIONS,
                |db, listener, shutdown| async {
                    let graph = graph::GraphClient::new(config.directory.graph_config()?)?;
                    directory_sync::App::build(&config, db, listener, graph)
                        .await?
                        .run(shutdown)
                        .await
                },
            )
            .await
        })
        .unwrap();
}
