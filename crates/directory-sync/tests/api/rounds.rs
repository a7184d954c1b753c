//! Rounds belong to the server: started by SyncNow, followed by WatchSyncRun, closed when their
//! process died, recorded as what they were.

use std::time::{Duration, Instant};

use directory_sync::App;
use directory_sync::config::DirectoryConfig;
use directory_sync::domain::{SyncMode, SyncRun, SyncRunStatus};
use proto::directory::v1 as pb;
use proto::directory::v1::directory_service_client::DirectoryServiceClient;
use service_runtime::storage::Database;
use tokio_util::sync::CancellationToken;

use crate::helpers::{Stack, directory_config, follow, run_to_end};

/// The stack's directory read in pages of `page_size` users.
fn paged(stack: &Stack, page_size: u16) -> DirectoryConfig {
    let mut config = directory_config(&stack.emulator);
    config.page_size = page_size;
    config
}

fn full() -> pb::SyncNowRequest {
    pb::SyncNowRequest {
        mode: pb::SyncMode::Full.into(),
        ..Default::default()
    }
}

async fn recorded(
    directory: &mut DirectoryServiceClient<tonic::transport::Channel>,
    run_id: &str,
) -> pb::SyncRun {
    let runs = directory
        .list_sync_runs(pb::ListSyncRunsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .runs;
    runs.into_iter().find(|r| r.run_id == run_id).unwrap()
}

/// The mirror's indexes on users, by name, and the definitions set aside.
async fn mirror_indexes(url: &str) -> (Vec<String>, Vec<String>) {
    let db = Database::connect(url, 1).await.unwrap();
    let sql = match db.backend() {
        service_runtime::storage::Backend::Postgres => {
            "SELECT indexname::text FROM pg_indexes WHERE tablename = 'directory_users' AND schemaname = current_schema() ORDER BY 1"
        }
        service_runtime::storage::Backend::Sqlite => {
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'directory_users' ORDER BY 1"
        }
    };
    let indexes: Vec<String> = sqlx::query_scalar(sql).fetch_all(db.pool()).await.unwrap();
    let set_aside: Vec<String> =
        sqlx::query_scalar("SELECT name FROM directory_deferred_indexes ORDER BY name")
            .fetch_all(db.pool())
            .await
            .unwrap();
    db.close().await;
    (indexes, set_aside)
}

test_support::on_both_backends! {
    async fn a_full_round_started_by_a_client_with_a_5_second_deadline_completes_on_the_server_and_the_client_follows_it_to_the_end(db) {
        let mut stack = Stack::spawn(&db, 600).await;
        let mut directory = stack.directory_reading(paged(&stack, 50)).await;
        // Twelve pages and the delta link, each answered after 600 ms: the round takes over 7 s.
        stack.emulator.set_latency(Duration::from_millis(600));
        let started = Instant::now();
        let mut request = tonic::Request::new(full());
        request.set_timeout(Duration::from_secs(5));
        let run = directory.sync_now(request).await.unwrap().into_inner().run.unwrap();
        assert!(started.elapsed() < Duration::from_secs(2), "SyncNow answers at once");
        assert_eq!(run.status(), pb::SyncRunStatus::Running);

        // A second round is refused while this one runs, naming it so the caller can follow it.
        let busy = directory.sync_now(full()).await.unwrap_err();
        assert_eq!(busy.code(), tonic::Code::Aborted);
        assert!(busy.message().contains(&run.run_id), "{}", busy.message());

        // The client follows with the same 5-second deadline, and is gone when it passes.
        let mut watch = tonic::Request::new(pb::WatchSyncRunRequest { run_id: run.run_id.clone() });
        watch.set_timeout(Duration::from_secs(5));
        let mut stream = directory.watch_sync_run(watch).await.unwrap().into_inner();
        let mut seen = Vec::new();
        let deadline = Duration::from_secs(5).saturating_sub(started.elapsed());
        let _ = tokio::time::timeout(deadline, async {
            while let Ok(Some(update)) = stream.message().await {
                seen.push(update);
            }
        })
        .await;
        drop(stream);
        assert!(!seen.is_empty());
        assert!(seen.iter().all(|u| u.run.as_ref().unwrap().status() == pb::SyncRunStatus::Running), "still running at the deadline");

        // The round went on without its caller; a new watch follows it to the end.
        let updates = follow(&mut directory, &run.run_id).await;
        let end = updates.last().unwrap().run.clone().unwrap();
        assert_eq!(end.status(), pb::SyncRunStatus::Succeeded, "{}", end.error);
        assert_eq!((end.users_seen, end.users_created, end.pages_read), (600, 600, 12));
        assert!(started.elapsed() > Duration::from_secs(5), "the round outlived the caller's deadline");
        assert!(end.duration_ms >= 5_000, "{}", end.duration_ms);
        assert_eq!(end.duration_ms, end.finished_at_ms - end.started_at_ms);

        // Progress was reported page by page, with what the round was doing and its rate.
        let pages: Vec<u64> = seen.iter().chain(&updates).map(|u| u.run.as_ref().unwrap().pages_read).collect();
        assert!(pages.windows(2).all(|w| w[0] <= w[1]), "{pages:?}");
        assert!(pages.iter().any(|&p| p > 0 && p < 12), "pages are reported as they are read: {pages:?}");
        assert!(seen.iter().chain(&updates).any(|u| u.phase == "reading users" && u.users_per_second > 0.0));
        assert_eq!(updates.last().unwrap().phase, "");

        // The record agrees, as the service that did not run it reads it.
        let status = stack.directory.clone().get_sync_status(pb::GetSyncStatusRequest {}).await.unwrap().into_inner();
        let last = status.last_run.unwrap();
        assert_eq!((last.run_id.as_str(), last.status(), last.users_seen, last.pages_read), (run.run_id.as_str(), pb::SyncRunStatus::Succeeded, 600, 12));
        assert_eq!(status.mirrored_users, 600);
    }

    async fn a_round_running_when_its_process_died_is_closed_as_abandoned_at_the_next_start(db) {
        let mut stack = Stack::spawn(&db, 300).await;
        stack.emulator.set_latency(Duration::from_millis(250));
        let config = stack.config_reading(&db.url, paged(&stack, 20));
        // A process of its own (a runtime of its own) dies mid-round: the runtime is dropped,
        // and nothing of the round runs any more, not even its clean-up.
        let run_id = tokio::task::spawn_blocking(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
            let run_id = runtime.block_on(async {
                let db = Database::connect(&config.database.url, 2).await.unwrap();
                let graph = graph::GraphClient::new(config.directory.graph_config().unwrap()).unwrap();
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let app = App::build(&config, db, listener, graph).await.unwrap();
                let (run, mut follower) = app.directory().start_round(SyncMode::Full, false).await.unwrap();
                // Long enough for the record to have been rewritten with the progress.
                while follower.borrow().run.pages_read < 10 {
                    follower.changed().await.unwrap();
                }
                run.run_id
            });
            runtime.shutdown_background();
            run_id
        })
        .await
        .unwrap();
        let left = recorded(&mut stack.directory.clone(), &run_id).await;
        assert_eq!(left.status(), pb::SyncRunStatus::Running, "the dead process left it running");

        // The next start closes it.
        stack.emulator.set_latency(Duration::ZERO);
        let mut next = stack.directory_reading(directory_config(&stack.emulator)).await;
        let closed = recorded(&mut next, &run_id).await;
        assert_eq!(closed.status(), pb::SyncRunStatus::Failed);
        assert!(closed.error.starts_with("abandoned"), "{}", closed.error);
        assert!(closed.pages_read > 0, "how far it got is kept");
        assert!(closed.finished_at_ms > closed.started_at_ms, "it ends at its last sign of life");
        assert!((0..60_000).contains(&closed.duration_ms), "{}", closed.duration_ms);
        let watched = follow(&mut next, &run_id).await;
        assert_eq!(watched.len(), 1, "an ended run is answered at once");

        // Nothing holds the next round back, and it reads the whole tenant.
        let run = run_to_end(&mut next, full()).await.run.unwrap();
        assert_eq!((run.status(), run.users_seen), (pb::SyncRunStatus::Succeeded, 300), "{}", run.error);
    }

    async fn a_first_load_that_dies_midway_leaves_its_search_indexes_to_the_next_start_which_builds_them(db) {
        let mut stack = Stack::spawn(&db, 300).await;
        let (migrated, none) = mirror_indexes(&db.url).await;
        assert!(migrated.len() >= 8, "{migrated:?}");
        assert!(none.is_empty());
        stack.emulator.set_latency(Duration::from_millis(250));
        let config = stack.config_reading(&db.url, paged(&stack, 20));
        // A first load in a process that dies part-way (its runtime dropped mid-round).
        tokio::task::spawn_blocking(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
            runtime.block_on(async {
                let db = Database::connect(&config.database.url, 2).await.unwrap();
                let graph = graph::GraphClient::new(config.directory.graph_config().unwrap()).unwrap();
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let app = App::build(&config, db, listener, graph).await.unwrap();
                let (_, mut follower) = app.directory().start_round(SyncMode::Full, false).await.unwrap();
                while follower.borrow().run.pages_read < 5 {
                    follower.changed().await.unwrap();
                }
            });
            runtime.shutdown_background();
        })
        .await
        .unwrap();
        let (during, set_aside) = mirror_indexes(&db.url).await;
        if db.backend == "postgres" {
            // Only the primary key stays while the users pour in; the rest wait to be built.
            assert_eq!(during, ["directory_users_pkey"]);
            assert_eq!(set_aside.len(), migrated.len() - 1, "{set_aside:?}");
        } else {
            assert_eq!((during, set_aside.len()), (migrated.clone(), 0), "SQLite keeps its indexes");
        }

        // The next start builds them; the mirror ends with exactly the migrations' indexes.
        stack.emulator.set_latency(Duration::ZERO);
        let mut next = stack.directory_reading(directory_config(&stack.emulator)).await;
        assert_eq!(mirror_indexes(&db.url).await, (migrated.clone(), Vec::new()));
        let run = run_to_end(&mut next, full()).await.run.unwrap();
        assert_eq!((run.status(), run.users_seen), (pb::SyncRunStatus::Succeeded, 300), "{}", run.error);
        assert_eq!(mirror_indexes(&db.url).await, (migrated, Vec::new()));
    }

    async fn a_first_load_builds_the_search_indexes_once_its_users_are_in(db) {
        let mut stack = Stack::spawn(&db, 300).await;
        let (migrated, _) = mirror_indexes(&db.url).await;
        let mut directory = stack.directory_reading(paged(&stack, 20)).await;
        let run = run_to_end(&mut directory, full()).await.run.unwrap();
        assert_eq!((run.status(), run.users_seen), (pb::SyncRunStatus::Succeeded, 300), "{}", run.error);
        assert_eq!(mirror_indexes(&db.url).await, (migrated, Vec::new()));
        if db.backend == "postgres" {
            // The loaded tables were rewritten in object-id order (the emulator serves its pages
            // in another), so a batch import's chunks read and mark rows that share pages.
            let conn = Database::connect(&db.url, 1).await.unwrap();
            for sql in [
                "SELECT object_id FROM directory_users ORDER BY ctid",
                "SELECT object_id FROM directory_not_imported ORDER BY ctid",
            ] {
                let stored: Vec<String> = sqlx::query_scalar(sql).fetch_all(conn.pool()).await.unwrap();
                let mut ordered = stored.clone();
                ordered.sort();
                assert_eq!(stored.len(), 300, "{sql}");
                assert!(stored == ordered, "{sql}: not in object-id order");
            }
            conn.close().await;
        }
        // A search is answered through them.
        let found = directory
            .list_users(pb::ListUsersRequest { search: "a".into(), page_size: 1000, not_imported_only: Some(false), ..Default::default() })
            .await
            .unwrap()
            .into_inner()
            .users;
        assert!(!found.is_empty());
        assert!(found.iter().all(|u| [&u.display_name, &u.user_principal_name, &u.mail]
            .iter()
            .any(|f| f.to_lowercase().starts_with('a'))), "{found:?}");
        // A second full round over a full mirror keeps them in place.
        let run = run_to_end(&mut directory, full()).await.run.unwrap();
        assert_eq!(run.status(), pb::SyncRunStatus::Succeeded, "{}", run.error);
        let (indexes, set_aside) = mirror_indexes(&db.url).await;
        assert!(set_aside.is_empty() && indexes.len() >= 8);
    }

    async fn durations_are_never_negative(db) {
        let mut stack = Stack::spawn(&db, 200).await;
        let mut directory = stack.directory_reading(paged(&stack, 20)).await;
        stack.emulator.set_latency(Duration::from_millis(150));
        let run = directory.sync_now(full()).await.unwrap().into_inner().run.unwrap();
        assert_eq!(run.finished_at_ms, 0, "no end yet");
        assert!(run.duration_ms >= 0);
        tokio::time::sleep(Duration::from_millis(600)).await;
        let status = stack.directory.clone().get_sync_status(pb::GetSyncStatusRequest {}).await.unwrap().into_inner();
        let running = status.last_run.unwrap();
        assert_eq!((running.run_id.as_str(), running.status()), (run.run_id.as_str(), pb::SyncRunStatus::Running));
        assert!((500..60_000).contains(&running.duration_ms), "the time so far: {}", running.duration_ms);

        let updates = follow(&mut directory, &run.run_id).await;
        let durations: Vec<i64> = updates.iter().map(|u| u.run.as_ref().unwrap().duration_ms).collect();
        assert!(durations.iter().all(|&d| d >= 0), "{durations:?}");
        assert!(durations.windows(2).all(|w| w[0] <= w[1]), "{durations:?}");
        let end = updates.last().unwrap().run.clone().unwrap();
        assert_eq!(end.duration_ms, end.finished_at_ms - end.started_at_ms);

        // Records without a usable end (an older version's, a clock that moved back) show none.
        let tenant = stack.emulator.tenant_id().to_ascii_lowercase();
        let now = service_runtime::now_ms();
        let mut conn = stack.db.pool().acquire().await.unwrap();
        for (run_id, finished_at_ms) in [("no-end", 0), ("ends-before-it-starts", now - 5_000)] {
            let mut run = SyncRun::start(run_id.into(), SyncMode::Full, now);
            run.status = SyncRunStatus::Failed;
            run.finished_at_ms = finished_at_ms;
            directory_sync::store::save_run(&mut conn, &tenant, &run, now).await.unwrap();
        }
        drop(conn);
        for run_id in ["no-end", "ends-before-it-starts"] {
            let run = recorded(&mut directory, run_id).await;
            assert_eq!(run.duration_ms, 0, "{run_id}");
        }
    }

    async fn a_delta_round_that_fell_back_is_recorded_as_a_full_round_that_fell_back(db) {
        let stack = Stack::spawn(&db, 150).await;
        let first = stack.full_sync().await;
        assert!(!first.fell_back_from_delta);
        stack.emulator.expire_delta_tokens();
        let mut directory = stack.directory.clone();
        let end = run_to_end(&mut directory, pb::SyncNowRequest { mode: pb::SyncMode::Delta.into(), ..Default::default() }).await;
        let run = end.run.unwrap();
        assert_eq!(run.status(), pb::SyncRunStatus::Succeeded, "{}", run.error);
        assert_eq!(run.mode(), pb::SyncMode::Full);
        assert!(run.fell_back_from_delta);
        assert!(run.fallback_reason.contains("resync"), "{}", run.fallback_reason);
        assert_eq!(run.users_seen, 150);

        // The run's record and the status say the same.
        let listed = recorded(&mut directory, &run.run_id).await;
        assert_eq!((listed.mode(), listed.fell_back_from_delta, listed.fallback_reason.as_str()), (pb::SyncMode::Full, true, run.fallback_reason.as_str()));
        let last = directory.get_sync_status(pb::GetSyncStatusRequest {}).await.unwrap().into_inner().last_run.unwrap();
        assert_eq!((last.run_id.as_str(), last.mode(), last.fell_back_from_delta), (run.run_id.as_str(), pb::SyncMode::Full, true));

        // A delta round that used its link is a delta round, and says nothing of falling back.
        let next = stack.sync(pb::SyncMode::Delta).await;
        assert_eq!((next.mode(), next.fell_back_from_delta, next.fallback_reason.as_str()), (pb::SyncMode::Delta, false, ""));
    }

    async fn a_round_in_progress_at_shutdown_is_recorded_as_stopped_and_its_follower_hears_it(db) {
        let stack = Stack::spawn(&db, 200).await;
        stack.emulator.set_latency(Duration::from_millis(200));
        let config = stack.config_reading(&db.url, paged(&stack, 20));
        let graph = graph::GraphClient::new(config.directory.graph_config().unwrap()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let app = App::build(&config, stack.db.clone(), listener, graph).await.unwrap();
        let addr = app.local_addr();
        let shutdown = CancellationToken::new();
        let serving = tokio::spawn(app.run(shutdown.clone()));
        let mut directory = DirectoryServiceClient::connect(format!("http://{addr}")).await.unwrap();
        let run = directory.sync_now(full()).await.unwrap().into_inner().run.unwrap();
        let watch = pb::WatchSyncRunRequest { run_id: run.run_id.clone() };
        let mut stream = directory.watch_sync_run(watch).await.unwrap().into_inner();
        tokio::time::sleep(Duration::from_millis(600)).await;

        shutdown.cancel();
        let mut last = None;
        while let Ok(Some(update)) = stream.message().await {
            last = update.run;
        }
        serving.await.unwrap().unwrap();
        let last = last.unwrap();
        assert_eq!(last.status(), pb::SyncRunStatus::Failed, "the follower hears how it ended");
        assert!(last.error.starts_with("stopped"), "{}", last.error);
        let stopped = recorded(&mut stack.directory.clone(), &run.run_id).await;
        assert_eq!((stopped.status(), stopped.error.as_str()), (pb::SyncRunStatus::Failed, last.error.as_str()));
        assert!(stopped.finished_at_ms >= stopped.started_at_ms);

        // A run nobody knows is named as such.
        let unknown = stack.directory.clone().watch_sync_run(pb::WatchSyncRunRequest { run_id: "no-such-run".into() }).await.unwrap_err();
        assert_eq!(unknown.code(), tonic::Code::NotFound);
        assert!(unknown.message().contains("no-such-run"), "{}", unknown.message());
    }
}
