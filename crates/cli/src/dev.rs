//! `userimport dev` and `userimport demo`: every service in this process on the embedded
//! default (SQLite files, the built-in Graph emulator), for a newcomer and a developer. Behind
//! the `dev` feature (on by default): an administrator's install can leave the servers and the
//! emulator out (`cargo install --path crates/cli --no-default-features`).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;

use crate::profile::DEV_TOKEN_FILE;
use crate::stack::{DirectorySource, LocalTokens, Ports, Stack, StackAuth, StackOptions, Storage};

#[derive(Debug, clap::Args)]
pub struct DevArgs {
    /// Where the SQLite files go.
    #[arg(long, default_value = ".userimport")]
    pub data_dir: PathBuf,
    /// Use this Postgres server (one schema per service) instead of SQLite.
    #[arg(long, env = "USERIMPORT_DEV_POSTGRES")]
    pub postgres: Option<String>,
    /// Users of the emulated tenant (ignored when DIRECTORY_SYNC_DIRECTORY__TENANT_ID names a
    /// real tenant).
    #[arg(long, default_value_t = 500)]
    pub users: usize,
    /// Ports of directory-sync, user-registry and import-worker: this one and the next two;
    /// the web console listens on the one after them.
    #[arg(long, default_value_t = 50051)]
    pub port_base: u16,
    /// Extra companies, as CODE or CODE=Name (DAT always exists).
    #[arg(long = "company")]
    pub companies: Vec<String>,
    /// Mirror this group's members (`sync.groups`; repeat for more): it scopes listings and
    /// imports and can be named by group-to-role rules. The emulated tenant has All Staff
    /// (every other user), Engineering, Platform and Empty, listed at start.
    #[arg(long = "sync-group")]
    pub sync_groups: Vec<String>,
    /// Seconds between scheduled delta rounds (0: only rounds you start).
    #[arg(long, default_value_t = 60)]
    pub delta_interval: u64,
    /// A tenant that pushes over SCIM instead of the emulator: directory-sync serves the SCIM
    /// endpoint on the port after the console's (create a token with `userimport scim tokens
    /// create`) and reads no Graph.
    #[arg(long)]
    pub scim: bool,
    #[command(subcommand)]
    pub command: Option<DevCommand>,
}

#[derive(Debug, Subcommand)]
pub enum DevCommand {
    /// Changes the emulated tenant of the running `userimport dev` (users by object id or
    /// UPN), so the next round has something to keep in step.
    #[command(subcommand)]
    Tenant(crate::tenant::TenantCommand),
}

/// `userimport demo`: a scripted tour on a throw-away stack.
pub async fn demo(users: usize, postgres: Option<String>) -> anyhow::Result<()> {
    let storage = match postgres {
        Some(url) => Storage::Postgres {
            url,
            schema_prefix: format!("demo_{}", uuid::Uuid::new_v4().simple()),
        },
        None => Storage::Sqlite(tempfile_dir()?),
    };
    let result = crate::demo::run(storage.clone(), users).await;
    storage.discard().await?;
    result
}

/// `userimport dev tenant …`: changes the emulated tenant of the running dev, found through
/// the profile.
pub async fn tenant(change: &crate::tenant::TenantCommand) -> anyhow::Result<()> {
    let base = crate::profile::path()
        .and_then(|path| crate::profile::load(&path).ok())
        .and_then(|profile| profile.dev_emulator_url)
        .context("no running `userimport dev` with an emulated tenant is noted in your profile")?;
    println!("{}", crate::tenant::change(&base, change).await?);
    Ok(())
}

/// Notes the dev token's file and the emulated tenant's address in the CLI profile (best
/// effort: the folder's own token file works without it).
fn note_dev(token_file: &std::path::Path, emulator_url: Option<String>) {
    let Some(path) = crate::profile::path() else {
        return;
    };
    let absolute = std::fs::canonicalize(token_file).unwrap_or_else(|_| token_file.to_owned());
    let noted = crate::profile::load(&path).and_then(|mut profile| {
        profile.dev_token_file = Some(absolute);
        profile.dev_emulator_url = emulator_url;
        crate::profile::save(&path, &profile)
    });
    if let Err(error) = noted {
        eprintln!("note: the dev token's location is not kept in your profile ({error:#})");
    }
}

/// Writes the local admin token where the CLI looks for it, readable by its owner only.
fn write_token(
    dir: &std::path::Path,
    file_name: &str,
    token: &secrecy::SecretString,
) -> anyhow::Result<PathBuf> {
    use secrecy::ExposeSecret as _;
    use std::io::Write as _;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(file_name);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(token.expose_secret().as_bytes())?;
    Ok(path)
}

pub fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir =
        std::env::temp_dir().join(format!("userimport-demo-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// Reads the directory the services would read: a real tenant when the directory-sync
/// environment names one, else the built-in emulator.
/// The tenant of `userimport dev --scim`.
const DEV_SCIM_TENANT: &str = "5c0e5e1d-0000-4000-8000-000000005c1a";

fn directory_source(users: usize) -> anyhow::Result<DirectorySource> {
    let tenant_configured =
        std::env::var("DIRECTORY_SYNC_DIRECTORY__TENANT_ID").is_ok_and(|v| !v.is_empty());
    if tenant_configured {
        let config = directory_sync::Config::load(None).map_err(|e| anyhow::anyhow!("{e}"))?;
        return Ok(DirectorySource::Graph(Box::new(config.directory)));
    }
    Ok(DirectorySource::Emulator { users })
}

/// `userimport dev`: the three services in this process until Ctrl-C.
pub async fn dev(args: DevArgs) -> anyhow::Result<()> {
    let storage = match args.postgres {
        Some(url) => Storage::Postgres {
            url,
            schema_prefix: "userimport".to_owned(),
        },
        None => Storage::Sqlite(args.data_dir.clone()),
    };
    let directory = if args.scim {
        DirectorySource::Scim {
            tenant_id: DEV_SCIM_TENANT.to_owned(),
            port: args.port_base + 4,
        }
    } else {
        directory_source(args.users)?
    };
    let pushed = args.scim;
    let companies = args
        .companies
        .iter()
        .map(|c| match c.split_once('=') {
            Some((code, name)) => (code.to_owned(), name.to_owned()),
            None => (c.clone(), String::new()),
        })
        .collect();
    let ports = Ports {
        directory: args.port_base,
        registry: args.port_base + 1,
        importer: args.port_base + 2,
    };
    let emulated = matches!(directory, DirectorySource::Emulator { .. });
    let tokens = LocalTokens::generate()?;
    let admin_token = tokens.admin.clone();
    let people = tokens.people.clone();
    let mut stack = Stack::start(StackOptions {
        storage: storage.clone(),
        directory,
        ports,
        companies,
        chunk_size: 1000,
        auth: StackAuth::Local(tokens),
        auto_import: false,
        sync_groups: args.sync_groups.clone(),
        delta_interval_secs: args.delta_interval,
        console: Some(args.port_base + 3),
    })
    .await?;
    // Only once every port is ours: a second `dev` in the same folder fails to bind above and
    // leaves the running one's token alone.
    let token_file = write_token(&args.data_dir, DEV_TOKEN_FILE, &admin_token)?;
    for (name, _, secret) in &people {
        write_token(&args.data_dir, &format!("{name}.token"), secret)?;
    }
    note_dev(
        &token_file,
        stack
            .emulator
            .as_ref()
            .map(|emulator| emulator.base_url().to_string()),
    );

    println!("userimport dev: every service in this process");
    println!("  directory-sync   {}", stack.directory_url);
    println!("  user-registry    {}", stack.registry_url);
    println!("  import-worker    {}", stack.importer_url);
    if let Some(console) = &stack.console_url {
        println!("  web console      {console}/  (open it in a browser; sign in as admin)");
    }
    match (&stack.emulator, emulated) {
        (Some(emulator), true) => {
            println!(
                "  Graph emulator   {} ({} users)",
                emulator.base_url(),
                args.users
            );
            for group in emulator.groups() {
                let synced = if args.sync_groups.contains(&group.id) {
                    " (synced)"
                } else {
                    ""
                };
                println!(
                    "    group          {} {}{synced}",
                    group.id, group.display_name
                );
            }
        }
        _ if pushed => println!(
            "  SCIM endpoint    {} (tenant {DEV_SCIM_TENANT}; `userimport scim tokens create --name test` makes its bearer secret)",
            stack.scim_url.as_deref().unwrap_or_default()
        ),
        _ => println!("  directory        Microsoft Graph (configured tenant)"),
    }
    match &storage {
        Storage::Sqlite(dir) => println!("  data             {} (SQLite)", dir.display()),
        Storage::Postgres { .. } => println!(
            "  data             Postgres, schemas userimport_directory/_registry/_importer"
        ),
    }
    if !pushed {
        println!("\nReading the directory…");
        let run = stack
            .directory
            .sync_now(directory_sync::domain::SyncMode::Full, false)
            .await;
        match run {
            Ok((run, _)) => println!(
                "full sync: {} users read ({} new, {} changed, {} removed)",
                run.users_seen, run.users_created, run.users_updated, run.users_removed
            ),
            Err(error) => println!("the first sync did not run: {error}"),
        }
    }
    println!(
        "  admin token      {} (new on every start; the CLI reads it from there)",
        token_file.display()
    );
    let mut env_hint = String::new();
    if args.port_base != 50051 {
        env_hint.push_str(&format!(
            "\nThe ports are not the defaults; first run:\n  export USERIMPORT_DIRECTORY_URL={} USERIMPORT_REGISTRY_URL={} USERIMPORT_IMPORTER_URL={}\n",
            stack.directory_url, stack.registry_url, stack.importer_url
        ));
    }
    if args.data_dir != std::path::Path::new(".userimport") {
        env_hint.push_str(&format!(
            "\nThe data folder is not the default: the CLI finds its token through your profile \
             (elsewhere: export USERIMPORT_TOKEN_FILE={})\n",
            token_file.display()
        ));
    }
    println!(
        "{env_hint}\nTry, in another terminal:\n  \
         userimport directory list --search a          # users not imported yet\n  \
         userimport import <object-id|upn|mail>...\n  \
         userimport users list\n  \
         userimport directory list --all --output csv\n\nCtrl-C stops everything."
    );

    let shutdown = service_runtime::shutdown::on_signal();
    tokio::select! {
        _ = shutdown.cancelled() => {}
        result = stack.any_stopped() => {
            result?;
            anyhow::bail!("a service stopped unexpectedly");
        }
    }
    println!("stopping…");
    stack.stop().await
}
