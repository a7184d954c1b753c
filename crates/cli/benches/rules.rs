//! Group-to-role rules at scale (issue 8): how long a rule takes to grant its role to a big
//! group, what reconciling costs on every sync round when nothing changed, how a round with
//! group leavers moves the grants, and how long removing the rule takes.
//!
//! The whole stack runs in this process (`cli::stack`) on a real Postgres, with the built-in
//! Graph emulator: `BENCH_USERS` synthetic users (default 100,000), a synced group holding every
//! other one, every user batch-imported first (not timed).
//!
//!   USERIMPORT_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!   BENCH_USERS=100000 cargo bench -p cli --bench rules
//!
//! `BENCH_LOG_FILTER=import_worker::rules=debug` prints each reconcile's phases.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use cli::stack::{DirectorySource, Ports, Stack, StackAuth, StackOptions, Storage};
use proto::directory::v1 as directory_pb;
use proto::directory::v1::directory_service_client::DirectoryServiceClient;
use proto::importer::v1 as importer_pb;
use proto::importer::v1::importer_service_client::ImporterServiceClient;

const GROUP: &str = "6a1e0000-0000-4000-8000-00000000be9c";

fn main() -> anyhow::Result<()> {
    let server = std::env::var("USERIMPORT_TEST_DATABASE_URL")
        .context("set USERIMPORT_TEST_DATABASE_URL to a Postgres server")?;
    let users: usize = std::env::var("BENCH_USERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let storage = Storage::Postgres {
        url: server,
        schema_prefix: format!("bench_rules_{}", uuid::Uuid::new_v4().simple()),
    };
    // BENCH_LOG_FILTER=import_worker::rules=debug shows where a reconcile spends its time.
    if let Ok(filter) = std::env::var("BENCH_LOG_FILTER") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    let runtime = tokio::runtime::Runtime::new()?;
    let result = runtime.block_on(bench(storage.clone(), users));
    runtime.block_on(storage.discard())?;
    result
}

fn seconds(started: Instant) -> f64 {
    started.elapsed().as_secs_f64()
}

async fn bench(storage: Storage, users: usize) -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions {
        storage,
        directory: DirectorySource::Emulator { users },
        ports: Ports::ANY,
        companies: vec![("USMF".into(), "Contoso USA".into())],
        chunk_size: 1000,
        auth: StackAuth::Insecure,
        auto_import: false,
        sync_groups: vec![GROUP.to_owned()],
        delta_interval_secs: 0,
        console: None,
    })
    .await?;
    let emulator = stack.emulator.as_ref().context("no emulator")?;
    let tenant = emulator.users();
    let members: Vec<String> = tenant.iter().step_by(2).map(|u| u.id.clone()).collect();
    emulator.add_group(graph_emulator::EmulatedGroup {
        id: GROUP.to_owned(),
        display_name: "Half the tenant".to_owned(),
        members: members
            .iter()
            .map(|id| graph_emulator::GroupMember::User(id.clone()))
            .collect(),
    })?;
    let mut directory = DirectoryServiceClient::connect(stack.directory_url.clone())
        .await?
        .max_decoding_message_size(64 << 20);
    let mut importer = ImporterServiceClient::connect(stack.importer_url.clone())
        .await?
        .max_decoding_message_size(64 << 20);

    // Setup, not timed: a full sync and a batch import of everyone.
    let started = Instant::now();
    let run = sync(&mut directory, directory_pb::SyncMode::Full).await?;
    ensure!(
        run.status() == directory_pb::SyncRunStatus::Succeeded,
        "full sync: {run:?}"
    );
    let job = importer
        .start_batch_import(importer_pb::StartBatchImportRequest {
            company: "DAT".into(),
            scope: Some(directory_pb::Scope {
                scope: Some(directory_pb::scope::Scope::All(directory_pb::AllUsers {})),
            }),
            ..Default::default()
        })
        .await?
        .into_inner()
        .job
        .context("no job")?;
    let job = loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let job = importer
            .get_job(importer_pb::GetJobRequest {
                job_id: job.job_id.clone(),
            })
            .await?
            .into_inner()
            .job
            .context("no job")?;
        match job.status() {
            importer_pb::JobStatus::Completed => break job,
            importer_pb::JobStatus::Failed | importer_pb::JobStatus::Cancelled => {
                bail!("job ended: {job:?}")
            }
            _ => {}
        }
    };
    let imported = job.counts.unwrap_or_default().created;
    println!(
        "setup: {users} users synced and {imported} imported in {:.1} s; the group holds {} of them",
        seconds(started),
        members.len()
    );

    // 1. Adding the rule grants its role to every member the registry holds.
    let started = Instant::now();
    let added = importer
        .add_role_rule(importer_pb::AddRoleRuleRequest {
            rule: Some(importer_pb::RoleRule {
                group_id: GROUP.into(),
                role_id: "ACCOUNTANT".into(),
                company: "USMF".into(),
                ..Default::default()
            }),
            dry_run: false,
        })
        .await?
        .into_inner();
    let add_s = seconds(started);
    let granted = added.changes.unwrap_or_default().granted;
    let rule_id = added.rule.context("no rule")?.rule_id;
    println!(
        "add rule: {granted} grants in {add_s:.2} s = {:.0} grants/s",
        granted as f64 / add_s
    );

    // 2. Reconciling when nothing changed: what every sync round pays.
    let started = Instant::now();
    let steady = importer
        .reconcile_role_rules(importer_pb::ReconcileRoleRulesRequest {
            via: "bench".into(),
            dry_run: false,
        })
        .await?
        .into_inner()
        .changes
        .unwrap_or_default();
    ensure!(
        steady.granted + steady.revoked == 0,
        "nothing should change: {steady:?}"
    );
    println!(
        "reconcile with nothing to change: {:.2} s ({} members compared with {} holders)",
        seconds(started),
        members.len(),
        granted
    );

    // 3. 1 % of the members leave the group; a delta round disables them (out of scope) and
    // the rule revokes exactly their grants.
    let leavers = members.len() / 100;
    for id in members.iter().take(leavers) {
        emulator.remove_group_member(GROUP, id)?;
    }
    let started = Instant::now();
    let mut run = sync(&mut directory, directory_pb::SyncMode::Delta).await?;
    let round_s = seconds(started);
    let mut approve_s = None;
    if run.status() == directory_pb::SyncRunStatus::AwaitingApproval {
        // More leavers than the safety rail lets through unasked: approve, as an admin would.
        let started = Instant::now();
        run = directory
            .approve_sync_run(directory_pb::ApproveSyncRunRequest {
                run_id: run.run_id.clone(),
            })
            .await?
            .into_inner()
            .run
            .context("no run")?;
        approve_s = Some(seconds(started));
    }
    ensure!(
        run.status() == directory_pb::SyncRunStatus::Succeeded,
        "delta round: {run:?}"
    );
    match approve_s {
        Some(approve_s) => println!(
            "delta round with {leavers} group leavers: halted by the safety rail after \
             {round_s:.2} s; approving it (disables, grants revoked) took {approve_s:.2} s"
        ),
        None => println!(
            "delta round with {leavers} group leavers (disabled, grants revoked): {round_s:.2} s"
        ),
    }

    // 4. Removing the rule revokes what it granted, and only that.
    let started = Instant::now();
    let removed = importer
        .remove_role_rule(importer_pb::RemoveRoleRuleRequest {
            rule_id,
            dry_run: false,
        })
        .await?
        .into_inner()
        .changes
        .unwrap_or_default();
    let remove_s = seconds(started);
    ensure!(
        removed.revoked == granted - leavers as u64,
        "revoked {} of {}",
        removed.revoked,
        granted - leavers as u64
    );
    println!(
        "remove rule: {} revokes in {remove_s:.2} s = {:.0} revokes/s",
        removed.revoked,
        removed.revoked as f64 / remove_s
    );
    stack.stop().await
}

async fn sync(
    directory: &mut DirectoryServiceClient<tonic::transport::Channel>,
    mode: directory_pb::SyncMode,
) -> anyhow::Result<directory_pb::SyncRun> {
    let started = directory
        .sync_now(directory_pb::SyncNowRequest {
            mode: mode.into(),
            dry_run: false,
        })
        .await?
        .into_inner()
        .run
        .context("no run")?;
    // SyncNow answers at once; the round's end comes with the watch.
    let watch = directory_pb::WatchSyncRunRequest {
        run_id: started.run_id,
    };
    let mut stream = directory.watch_sync_run(watch).await?.into_inner();
    let mut last = None;
    while let Some(update) = stream.message().await? {
        last = update.run;
    }
    last.context("the watch ended without the run")
}
