//! `userimport demo`: a scripted tour on a throw-away stack — sync the emulated tenant, list
//! users not imported yet, import a few (a member, colliding aliases, a guest, a guest
//! without mail), import them again, and list the registry.

use anyhow::Context as _;

use crate::commands::{self, DirectoryListArgs, DirectoryRow, Endpoints, UsersListArgs};
use crate::output::{Format, print};
use crate::stack::{DirectorySource, LocalTokens, Ports, Stack, StackAuth, StackOptions, Storage};

/// Picks the users the tour imports: the first member, two members whose aliases share their
/// first 20 characters, a guest with mail and a guest without.
pub fn pick_tour_users(rows: &[DirectoryRow]) -> Vec<&DirectoryRow> {
    let mut picked: Vec<&DirectoryRow> = Vec::new();
    let local = |row: &DirectoryRow| {
        row.user_principal_name
            .split('@')
            .next()
            .unwrap_or_default()
            .to_lowercase()
    };
    if let Some(member) = rows
        .iter()
        .find(|r| r.account_type == "member" && local(r).len() < 20)
    {
        picked.push(member);
    }
    let long: Vec<&DirectoryRow> = rows
        .iter()
        .filter(|r| r.account_type == "member" && local(r).len() > 20)
        .collect();
    'pairs: for (i, a) in long.iter().enumerate() {
        for b in &long[i + 1..] {
            if local(a)[..20] == local(b)[..20] {
                picked.extend([*a, *b]);
                break 'pairs;
            }
        }
    }
    if let Some(guest) = rows
        .iter()
        .find(|r| r.account_type == "guest" && !r.mail.is_empty())
    {
        picked.push(guest);
    }
    if let Some(guest) = rows
        .iter()
        .find(|r| r.account_type == "guest" && r.mail.is_empty())
    {
        picked.push(guest);
    }
    picked
}

/// Runs the tour and stops the stack.
pub async fn run(storage: Storage, users: usize) -> anyhow::Result<()> {
    let format = Format::Table;
    println!(
        "Starting user-registry, directory-sync and import-worker with an emulated tenant of {users} users…"
    );
    let tokens = LocalTokens::generate()?;
    let stack = Stack::start(StackOptions {
        storage,
        directory: DirectorySource::Emulator { users },
        ports: Ports::ANY,
        companies: Vec::new(),
        chunk_size: 100,
        auth: StackAuth::Local(tokens.clone()),
        auto_import: false,
        sync_groups: Vec::new(),
        delta_interval_secs: 0,
        console: None,
    })
    .await?;
    let endpoints = Endpoints {
        directory: stack.directory_url.clone(),
        registry: stack.registry_url.clone(),
        importer: stack.importer_url.clone(),
        principal: "admin".to_owned(),
        token: Some(tokens.admin.clone()),
        ..Endpoints::default()
    };

    println!("\n1. Sync the directory into directory-sync's mirror");
    let run = commands::directory_sync(&endpoints, false).await?;
    println!("   {}", commands::describe_run(&run));

    println!("\n2. Users not imported yet (the first 8 of the select-import dialog)");
    let listed = commands::directory_list(
        &endpoints,
        &DirectoryListArgs {
            limit: 1000,
            ..Default::default()
        },
    )
    .await?;
    print(format, &listed[..listed.len().min(8)])?;

    let picked = pick_tour_users(&listed);
    let ids: Vec<String> = picked.iter().map(|r| r.object_id.clone()).collect();
    println!(
        "\n3. Import {} of them into company DAT: a member, two aliases colliding after 20 characters, a guest, a guest without mail",
        ids.len()
    );
    let response = commands::import(&endpoints, &ids, "DAT", None, false, false).await?;
    commands::print_import(format, response)?;

    println!("\n4. Import the same users again: nothing changes");
    let again = commands::import(&endpoints, &ids, "DAT", None, false, false).await?;
    println!(
        "   {}",
        commands::describe_counts(&again.response.counts.context("no counts")?)
    );

    println!("\n5. Batch-import everyone else as a job: chunks through the queue, then the report");
    let job = commands::batch_start(
        &endpoints,
        &commands::BatchStartArgs {
            company: Some("DAT".to_owned()),
            monitoring_category: "demo".to_owned(),
            ..Default::default()
        },
    )
    .await?;
    let ended = commands::job_watch(&endpoints, &job.job_id, true).await?;
    println!("   {}", commands::describe_job(&ended));
    let not_created = commands::job_outcomes(&endpoints, &job.job_id).await?;
    let not_created: Vec<_> = not_created
        .into_iter()
        .filter(|row| row.outcome != "already present")
        .collect();
    match not_created.len() {
        0 => println!("   Every user was created."),
        n if n <= 5 => println!("   Not created, with the reason ({n}):"),
        n => println!("   Not created, with the reason (the first 5 of {n}):"),
    }
    print(format, &not_created[..not_created.len().min(5)])?;

    println!("\n6. The registry now holds (the first 10)");
    let users = commands::users_list(
        &endpoints,
        &UsersListArgs {
            limit: 10,
            ..Default::default()
        },
    )
    .await?;
    print(format, &users)?;

    let remaining = commands::directory_list(
        &endpoints,
        &DirectoryListArgs {
            limit: usize::MAX,
            ..Default::default()
        },
    )
    .await?;
    let counts = ended.counts.unwrap_or_default();
    println!(
        "\nDone: {} users in the directory, {} imported, {} left out (guests without mail). \
         This tour's stack is gone now; run `userimport dev` for one that stays up, and try \
         the commands in README's \"Using it\" against it.",
        run.users_seen,
        counts.created + counts.already_present,
        remaining.len(),
    );
    stack.stop().await
}
