use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use cli::admin::{self, AuditListArgs, RoleChangeArgs};
use cli::commands::{self, DirectoryListArgs, Endpoints, UsersListArgs};
use cli::output::{Format, note, print};

/// Import people from Microsoft Entra ID into the ERP's user registry.
#[derive(Debug, Parser)]
#[command(name = "userimport", version, about)]
struct Cli {
    /// directory-sync's gRPC address.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "USERIMPORT_DIRECTORY_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    directory_url: String,
    /// user-registry's gRPC address.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "USERIMPORT_REGISTRY_URL",
        default_value = "http://127.0.0.1:50052"
    )]
    registry_url: String,
    /// import-worker's gRPC address.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "USERIMPORT_IMPORTER_URL",
        default_value = "http://127.0.0.1:50053"
    )]
    importer_url: String,
    /// Who you act as against services in insecure development mode (ignored by services
    /// that verify tokens).
    #[arg(
        long = "as",
        global = true,
        help_heading = "Global options",
        env = "USERIMPORT_PRINCIPAL",
        default_value = "admin"
    )]
    principal: String,
    /// A file holding your bearer token (default: `.userimport/admin.token`, which
    /// `userimport dev` writes, when it exists). USERIMPORT_TOKEN gives the token itself.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "USERIMPORT_TOKEN_FILE"
    )]
    token_file: Option<PathBuf>,
    /// CA certificates (PEM) to trust for `https://` service URLs.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "USERIMPORT_TLS_CA_FILE"
    )]
    tls_ca_file: Option<PathBuf>,
    /// A client certificate (PEM) for services that require mutual TLS.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "USERIMPORT_TLS_CERT_FILE",
        requires = "tls_key_file"
    )]
    tls_cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "USERIMPORT_TLS_KEY_FILE"
    )]
    tls_key_file: Option<PathBuf>,
    /// How to print results.
    #[arg(
        long,
        short,
        global = true,
        value_enum,
        env = "USERIMPORT_OUTPUT",
        default_value = "table"
    )]
    output: Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the three services in this process on the embedded default (SQLite, built-in Graph
    /// emulator) until Ctrl-C; other `userimport` commands then talk to it.
    #[cfg(feature = "dev")]
    Dev(cli::dev::DevArgs),
    /// A scripted tour on a throw-away stack: sync, list, select-import, import again.
    #[cfg(feature = "dev")]
    Demo {
        /// Users of the emulated tenant.
        #[arg(long, default_value_t = 200)]
        users: usize,
        /// Use this Postgres server (one schema per service) instead of SQLite.
        #[arg(long)]
        postgres: Option<String>,
    },
    /// The directory as directory-sync mirrors it.
    #[command(subcommand)]
    Directory(DirectoryCommand),
    /// Imports the named users (object ids, user principal names, or guests' mail) now.
    Import {
        /// Object ids, user principal names, or guests' mail addresses.
        #[arg(required = true)]
        users: Vec<String>,
        /// Import nobody if any named user is unknown (by default an unknown user is that
        /// user's outcome, and the others are imported).
        #[arg(long)]
        all_or_nothing: bool,
        /// Default company of the imported users; your current company (`userimport company`)
        /// unless given.
        #[arg(long, env = "USERIMPORT_COMPANY")]
        company: Option<String>,
        /// Makes a retried command report the same outcomes instead of "already present".
        #[arg(long)]
        request_id: Option<String>,
        /// Show what the import would do (user ids included) and write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Imports every user in scope as a background job (D365 "Batch import").
    #[command(subcommand)]
    Batch(BatchCommand),
    /// Import jobs: select imports and batch jobs.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// Users of the registry.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Companies of the registry.
    #[command(subcommand)]
    Companies(CompaniesCommand),
    /// Your current company (as D365's session company): imports, batch imports, run-now and
    /// rules use it unless --company says otherwise. Without a subcommand, shows it.
    Company {
        #[command(subcommand)]
        command: Option<CompanyCommand>,
    },
    /// Sync rounds: run one, see the last, approve or reject one the safety threshold halted.
    #[command(subcommand)]
    Sync(SyncCommand),
    /// The security roles users can be granted.
    #[command(subcommand)]
    Roles(RolesCommand),
    /// The registry's audit trail: every import, grant, revoke, rename, enable and disable.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Group-to-role rules: members of a directory group get a role.
    #[command(subcommand)]
    Rules(RulesCommand),
}

#[derive(Debug, Subcommand)]
enum RulesCommand {
    /// Lists the rules.
    List,
    /// Adds a rule and grants its role to the group's members in the registry.
    Add {
        /// The directory group (object id; one of directory-sync's sync.groups).
        #[arg(long)]
        group: String,
        /// The role to grant (see `userimport roles list`).
        #[arg(long)]
        role: String,
        /// Grant it in this company; your current company (`userimport company`) unless given.
        #[arg(long, conflicts_with = "all_companies")]
        company: Option<String>,
        /// Grant it in every company instead of one.
        #[arg(long)]
        all_companies: bool,
        /// Show the grants it would make and store nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Removes a rule and revokes exactly the grants it made.
    Remove {
        rule_id: String,
        /// Show the revokes it would make and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Subcommand)]
enum SyncCommand {
    /// Shows the last round and the mirror's size.
    Status,
    /// Runs a round now (full by default, or the changes since the last round) and follows it
    /// to its end. The round runs on directory-sync whatever happens to this command; the exit
    /// code is non-zero when it fails (not when it halts for approval).
    Now {
        /// Read only the changes since the last round (a full round when there is no cursor).
        #[arg(long)]
        delta: bool,
        /// Read the directory, then only show what the round would change in the registry;
        /// the run waits for `sync approve` (applies exactly that) or `sync reject`.
        #[arg(long)]
        dry_run: bool,
    },
    /// Follows a round (started by `sync now`, the schedule or another administrator) to its
    /// end; the exit code is as for `sync now`.
    Watch { run_id: String },
    /// Lists the last rounds, newest first, with their run ids (a halted round's is the one
    /// to approve or reject).
    Runs {
        /// How many rounds.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Applies the changes of a round halted because it would disable too many users, or of
    /// a dry run (`sync status` names the run waiting).
    Approve {
        /// The run id, as `sync now` or `sync status` printed it.
        run_id: String,
    },
    /// Drops the changes of a halted round; the registry stays as it is.
    Reject {
        run_id: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
}

#[derive(Debug, Subcommand)]
enum RolesCommand {
    /// Lists the role catalog.
    List,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Lists audit events, newest first.
    List(AuditListArgs),
}

#[derive(Debug, Subcommand)]
enum DirectoryCommand {
    /// Lists directory users, by default those not imported yet.
    List(DirectoryListArgs),
    /// Runs a sync round now (full by default, or the changes since the last round) and
    /// follows it to its end; exits non-zero when it fails.
    Sync {
        /// Read only the changes since the last round (a full round when there is no cursor).
        #[arg(long)]
        delta: bool,
    },
    /// Lists the groups whose members are synced (`sync.groups`).
    Groups {
        /// Prefix of the group name.
        #[arg(long, short)]
        search: Option<String>,
    },
    /// Shows the last sync and the mirror's size.
    Status,
}

#[derive(Debug, Subcommand)]
enum BatchCommand {
    /// Starts a batch import job; `--wait` follows it with a progress bar.
    Start(commands::BatchStartArgs),
    /// Runs the import in this request, without the queue, and prints its report.
    RunNow {
        /// Default company of the imported users; your current company unless given.
        #[arg(long, env = "USERIMPORT_COMPANY")]
        company: Option<String>,
        /// Only the members of this synced group (object id).
        #[arg(long)]
        group: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum JobsCommand {
    /// Lists the jobs you may see, newest first.
    List {
        /// At most this many jobs, newest first.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Shows one job.
    Show { job_id: String },
    /// Follows a job with a progress bar until it ends.
    Watch { job_id: String },
    /// Cancels a job: planning stops and chunks not processed yet are discarded.
    Cancel { job_id: String },
    /// Resumes a failed batch job: exactly its failed users run again, in the same job
    /// (users it created are not created twice). Add --wait to follow it to its end.
    Retry {
        job_id: String,
        /// Follow the job with a progress bar until it ends; exit non-zero unless it completes.
        #[arg(long)]
        wait: bool,
    },
    /// Lists every user of a job that was not created, with the reason.
    Outcomes { job_id: String },
}

#[derive(Debug, Subcommand)]
enum UsersCommand {
    /// Lists registry users.
    List(UsersListArgs),
    /// Shows one user: every field, its roles per company and where each came from, and how
    /// the directory sees it now.
    Show {
        /// A user id, a sign-in name (UPN, or a guest's mail) or an Entra object id.
        user: String,
    },
    /// Grants roles to users, in every company or with --company in one.
    AssignRoles(RoleChangeArgs),
    /// Revokes roles from users, in every company or with --company in one.
    RevokeRoles(RoleChangeArgs),
    /// Changes a user's id; its object id, roles and history stay.
    Rename {
        user_id: String,
        new_user_id: String,
    },
    /// Enables users.
    Enable {
        #[arg(required = true)]
        users: Vec<String>,
    },
    /// Disables users.
    Disable {
        #[arg(required = true)]
        users: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
enum CompanyCommand {
    /// Makes CODE your current company (it must exist in the registry); kept in your profile.
    Use { code: String },
}

#[derive(Debug, Subcommand)]
enum CompaniesCommand {
    /// Lists companies.
    List,
    /// Creates a company (code: 1 to 4 letters or digits).
    Create {
        code: String,
        #[arg(long, default_value = "")]
        name: String,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // `userimport … -o json | head`: the reader has what it wanted.
        Err(error) if broken_pipe(&error) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("Error: {error:?}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn broken_pipe(error: &anyhow::Error) -> bool {
    use std::io::ErrorKind::BrokenPipe;
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == BrokenPipe)
            // serde_json keeps the I/O error inside, without a source.
            || cause
                .downcast_ref::<serde_json::Error>()
                .is_some_and(|json| json.io_error_kind() == Some(BrokenPipe))
    })
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let _telemetry = service_runtime::telemetry::init(
        &service_runtime::config::LogConfig {
            format: service_runtime::config::LogFormat::Pretty,
            filter: "warn".to_owned(),
            otlp_endpoint: std::env::var("USERIMPORT_OTLP_ENDPOINT").ok(),
        },
        "userimport",
    );
    service_runtime::install_crypto_provider();
    let token = match &cli.command {
        #[cfg(feature = "dev")]
        Command::Dev(_) | Command::Demo { .. } => None,
        _ => token(cli.token_file.as_deref(), &cli.principal)?,
    };
    let endpoints = Endpoints {
        directory: cli.directory_url,
        registry: cli.registry_url,
        importer: cli.importer_url,
        principal: cli.principal,
        token,
        tls: service_runtime::tls::ClientTls {
            ca_file: cli.tls_ca_file,
            cert_file: cli.tls_cert_file,
            key_file: cli.tls_key_file,
            domain: None,
        },
    };
    let format = cli.output;
    // The root of the command's trace: every call below carries it (exported only when
    // USERIMPORT_OTLP_ENDPOINT is set), so a batch import is one trace from here on.
    let root = tracing::info_span!("userimport", otel.kind = "client");
    let _in_root = root.enter();
    match cli.command {
        #[cfg(feature = "dev")]
        Command::Dev(cli::dev::DevArgs {
            command: Some(cli::dev::DevCommand::Tenant(change)),
            ..
        }) => cli::dev::tenant(&change).await,
        #[cfg(feature = "dev")]
        Command::Dev(args) => cli::dev::dev(args).await,
        #[cfg(feature = "dev")]
        Command::Demo { users, postgres } => cli::dev::demo(users, postgres).await,
        Command::Directory(DirectoryCommand::List(mut args)) => {
            let limit = listing_limit(format, args.limit);
            args.limit = limit.saturating_add(1);
            let rows = commands::directory_list(&endpoints, &args).await?;
            print_listing(format, rows, limit, "users")
        }
        Command::Directory(DirectoryCommand::Groups { search }) => print(
            format,
            &commands::directory_groups(&endpoints, search).await?,
        ),
        Command::Sync(SyncCommand::Now { delta, dry_run }) => {
            let started = cli::rounds::start(&endpoints, delta, dry_run).await?;
            cli::rounds::follow_and_report(&endpoints, format, &started, dry_run).await
        }
        Command::Directory(DirectoryCommand::Sync { delta }) => {
            let started = cli::rounds::start(&endpoints, delta, false).await?;
            cli::rounds::follow_and_report(&endpoints, format, &started, false).await
        }
        Command::Sync(SyncCommand::Runs { limit }) => {
            print(format, &commands::sync_runs(&endpoints, limit).await?)
        }
        Command::Sync(SyncCommand::Watch { run_id }) => {
            let started = cli::rounds::Started {
                run_id,
                already_running: false,
            };
            cli::rounds::follow_and_report(&endpoints, format, &started, false).await
        }
        Command::Sync(SyncCommand::Approve { run_id }) => {
            let run = commands::sync_approve(&endpoints, &run_id).await?;
            println!("{}", commands::describe_run(&run));
            Ok(())
        }
        Command::Sync(SyncCommand::Reject { run_id, reason }) => {
            let run = commands::sync_reject(&endpoints, &run_id, &reason).await?;
            println!("{}", commands::describe_run(&run));
            Ok(())
        }
        Command::Sync(SyncCommand::Status) | Command::Directory(DirectoryCommand::Status) => {
            let status = commands::directory_status(&endpoints).await?;
            println!(
                "tenant {}: {} users mirrored",
                status.tenant_id, status.mirrored_users
            );
            match status.last_run {
                Some(run) => println!("last run {}: {}", run.run_id, commands::describe_run(&run)),
                None => println!("no sync has run yet"),
            }
            if status.next_run_at_ms > 0 {
                let seconds = (status.next_run_at_ms - service_runtime::now_ms()).max(0) / 1000;
                println!("next delta round in {seconds} s");
            }
            Ok(())
        }
        Command::Import {
            users,
            company,
            request_id,
            dry_run,
            all_or_nothing,
        } => {
            let (company, source) = cli::profile::company(company)?;
            eprintln!("{}", cli::profile::describe(&company, &source));
            let response = commands::import(
                &endpoints,
                &users,
                &company,
                request_id,
                dry_run,
                all_or_nothing,
            )
            .await?;
            if dry_run {
                note(format, "dry run: nothing was written");
            }
            commands::print_import(format, response)
        }
        Command::Batch(BatchCommand::Start(mut args)) if args.dry_run => {
            let (company, source) = cli::profile::company(args.company.take())?;
            eprintln!("{}", cli::profile::describe(&company, &source));
            args.company = Some(company);
            let preview =
                cli::changes::batch_preview(&endpoints, commands::batch_request(&args)).await?;
            cli::changes::print_batch_preview(format, preview)
        }
        Command::Batch(BatchCommand::Start(mut args)) => {
            let (company, source) = cli::profile::company(args.company.take())?;
            eprintln!("{}", cli::profile::describe(&company, &source));
            args.company = Some(company);
            let job = commands::batch_start(&endpoints, &args).await?;
            if !job.notice.is_empty() {
                eprintln!("warning: {}", job.notice);
            }
            if !args.wait {
                print(format, &[commands::JobRow::from(job.clone())])?;
                note(
                    format,
                    format!("follow it with: userimport jobs watch {}", job.job_id),
                );
                return Ok(());
            }
            let ended =
                commands::job_watch(&endpoints, &job.job_id, format == Format::Table).await?;
            note(format, commands::describe_job(&ended));
            if format != Format::Table {
                print(format, &[commands::JobRow::from(ended)])?;
            }
            Ok(())
        }
        Command::Batch(BatchCommand::RunNow { company, group }) => {
            let (company, source) = cli::profile::company(company)?;
            eprintln!("{}", cli::profile::describe(&company, &source));
            let response = commands::run_now(&endpoints, &company, group.as_deref()).await?;
            let rows: Vec<commands::OutcomeRow> = response
                .not_created
                .into_iter()
                .map(commands::OutcomeRow::from)
                .collect();
            print(format, &rows)?;
            if let Some(job) = response.job {
                note(format, commands::describe_job(&job));
            }
            Ok(())
        }
        Command::Rules(RulesCommand::List) => {
            print(format, &cli::changes::rules_list(&endpoints).await?)
        }
        Command::Rules(RulesCommand::Add {
            group,
            role,
            company,
            all_companies,
            dry_run,
        }) => {
            let company = if all_companies {
                eprintln!("every company");
                None
            } else {
                let (company, source) = cli::profile::company(company)?;
                eprintln!("{}", cli::profile::describe(&company, &source));
                Some(company)
            };
            let (rule, changes) =
                cli::changes::rules_add(&endpoints, &group, &role, company.as_deref(), dry_run)
                    .await?;
            if !dry_run {
                note(
                    format,
                    format!(
                        "rule {}: members of group {} get {} in {}",
                        rule.rule_id,
                        rule.group_id,
                        rule.role_id,
                        if rule.company.is_empty() {
                            "every company"
                        } else {
                            &rule.company
                        }
                    ),
                );
            }
            cli::changes::print_rule_changes(format, &changes, dry_run)
        }
        Command::Rules(RulesCommand::Remove { rule_id, dry_run }) => {
            let changes = cli::changes::rules_remove(&endpoints, &rule_id, dry_run).await?;
            cli::changes::print_rule_changes(format, &changes, dry_run)
        }
        Command::Jobs(JobsCommand::List { limit }) => {
            print(format, &commands::jobs_list(&endpoints, limit).await?)
        }
        Command::Jobs(JobsCommand::Show { job_id }) => {
            let job = commands::job_show(&endpoints, &job_id).await?;
            note(format, commands::describe_job(&job));
            note(format, commands::describe_job_times(&job));
            print(format, &[commands::JobRow::from(job)])
        }
        Command::Jobs(JobsCommand::Watch { job_id }) => {
            let job = commands::job_watch(&endpoints, &job_id, format == Format::Table).await?;
            note(format, commands::describe_job(&job));
            Ok(())
        }
        Command::Jobs(JobsCommand::Cancel { job_id }) => {
            let job = commands::job_cancel(&endpoints, &job_id).await?;
            note(format, commands::describe_job(&job));
            Ok(())
        }
        Command::Jobs(JobsCommand::Retry { job_id, wait }) => {
            let (job, chunks, users) = commands::job_retry(&endpoints, &job_id).await?;
            eprintln!("{users} failed users in {chunks} chunks run again in job {job_id}");
            let job = if wait {
                commands::job_watch(&endpoints, &job_id, format == Format::Table).await?
            } else {
                job
            };
            note(format, commands::describe_job(&job));
            if wait && job.status() != proto::importer::v1::JobStatus::Completed {
                anyhow::bail!("job {job_id} ended {}", commands::status_name(job.status()));
            }
            Ok(())
        }
        Command::Jobs(JobsCommand::Outcomes { job_id }) => {
            print(format, &commands::job_outcomes(&endpoints, &job_id).await?)
        }
        Command::Users(UsersCommand::Show { user }) => {
            let details = cli::show::user_show(&endpoints, &user).await?;
            cli::show::print_user(format, &details)
        }
        Command::Users(UsersCommand::List(mut args)) => {
            let limit = listing_limit(format, args.limit);
            args.limit = limit.saturating_add(1);
            let rows = commands::users_list(&endpoints, &args).await?;
            print_listing(format, rows, limit, "users")
        }
        Command::Users(UsersCommand::AssignRoles(args)) => {
            let granted = admin::assign_roles(&endpoints, &args).await?;
            print_count(format, "granted", granted)
        }
        Command::Users(UsersCommand::RevokeRoles(args)) => {
            let revoked = admin::revoke_roles(&endpoints, &args).await?;
            print_count(format, "revoked", revoked)
        }
        Command::Users(UsersCommand::Rename {
            user_id,
            new_user_id,
        }) => print(
            format,
            &[admin::rename(&endpoints, &user_id, &new_user_id).await?],
        ),
        Command::Users(UsersCommand::Enable { users }) => {
            print(format, &admin::set_enabled(&endpoints, &users, true).await?)
        }
        Command::Users(UsersCommand::Disable { users }) => print(
            format,
            &admin::set_enabled(&endpoints, &users, false).await?,
        ),
        Command::Roles(RolesCommand::List) => print(format, &admin::roles_list(&endpoints).await?),
        Command::Audit(AuditCommand::List(mut args)) => {
            let limit = listing_limit(format, args.limit);
            args.limit = limit.saturating_add(1);
            let rows = admin::audit_list(&endpoints, &args).await?;
            print_listing(format, rows, limit, "events")
        }
        Command::Company { command: None } => {
            let (company, source) = cli::profile::company(None)?;
            let mut line = cli::profile::describe(&company, &source);
            if let cli::profile::CompanySource::Profile(path) = &source {
                line.push_str(&format!("; kept in {}", path.display()));
            }
            println!("{line}");
            Ok(())
        }
        Command::Company {
            command: Some(CompanyCommand::Use { code }),
        } => {
            let code = code.trim().to_ascii_uppercase();
            let known = commands::companies_list(&endpoints).await?;
            if !known.iter().any(|c| c.code == code) {
                let codes: Vec<&str> = known.iter().map(|c| c.code.as_str()).collect();
                anyhow::bail!(
                    "company {code} does not exist (the registry has {}); create it with \
                     `userimport companies create {code} --name …`",
                    codes.join(", ")
                );
            }
            let path = cli::profile::path()
                .context("no profile folder: set HOME, XDG_CONFIG_HOME or USERIMPORT_PROFILE")?;
            let mut profile = cli::profile::load(&path)?;
            profile.company = Some(code.clone());
            cli::profile::save(&path, &profile)?;
            println!("current company: {code} (kept in {})", path.display());
            Ok(())
        }
        Command::Companies(CompaniesCommand::List) => {
            print(format, &commands::companies_list(&endpoints).await?)
        }
        Command::Companies(CompaniesCommand::Create { code, name }) => print(
            format,
            &[commands::companies_create(&endpoints, &code, &name).await?],
        ),
    }
}

/// Prints how many grants a role command changed: a line for people, a record for scripts.
/// How many rows a listing shows: `--limit`, or by default 50 in a table (for people) and
/// every row as JSON or CSV (an export is complete unless a limit was asked for).
fn listing_limit(format: Format, requested: usize) -> usize {
    match (requested, format) {
        (0, Format::Table) => 50,
        (0, _) => usize::MAX,
        (n, _) => n,
    }
}

/// Prints a listing fetched with one row more than `limit`, and says whether it is complete.
fn print_listing<R: cli::output::Record>(
    format: Format,
    mut rows: Vec<R>,
    limit: usize,
    what: &str,
) -> anyhow::Result<()> {
    let more = rows.len() > limit;
    rows.truncate(limit);
    print(format, &rows)?;
    if more {
        note(
            format,
            format!(
                "the first {} {what} shown; more match: --limit N shows more, and -o csv or \
                 -o json exports them all",
                rows.len()
            ),
        );
    } else {
        note(format, format!("{} {what}", rows.len()));
    }
    Ok(())
}

fn print_count(format: Format, what: &str, count: u64) -> anyhow::Result<()> {
    match format {
        Format::Table => println!(
            "{count} {} {what}",
            if count == 1 { "grant" } else { "grants" }
        ),
        Format::Json => println!("{}", serde_json::json!({ what: count })),
        Format::Csv => println!("{}\n{count}", what.to_uppercase()),
    }
    Ok(())
}

/// The bearer token: USERIMPORT_TOKEN, else the token file given, else the one the last
/// `userimport dev` started wrote (noted in the profile; its data folder may be any), else
/// the one in this folder's default data folder, else none.
fn token(
    file: Option<&std::path::Path>,
    principal: &str,
) -> anyhow::Result<Option<secrecy::SecretString>> {
    if let Ok(token) = std::env::var("USERIMPORT_TOKEN")
        && !token.trim().is_empty()
    {
        return Ok(Some(secrecy::SecretString::from(token.trim().to_owned())));
    }
    // `--as NAME` against `userimport dev`: the token dev wrote for NAME beside its admin's.
    let file_name = if principal == "admin" {
        cli::profile::DEV_TOKEN_FILE.to_owned()
    } else {
        let known = cli::profile::DEV_PEOPLE
            .iter()
            .any(|(name, _)| *name == principal);
        if !known && file.is_none() {
            let names: Vec<&str> = cli::profile::DEV_PEOPLE.iter().map(|(n, _)| *n).collect();
            eprintln!(
                "note: `userimport dev` knows admin, {}; --as {principal} is sent as a name, \
                 which only services in insecure mode honour",
                names.join(", ")
            );
        }
        format!("{principal}.token")
    };
    let default = PathBuf::from(".userimport").join(&file_name);
    // `userimport dev` notes its token file in the profile, so the CLI finds it from any folder.
    let noted = || {
        cli::profile::path()
            .and_then(|path| cli::profile::load(&path).ok())
            .and_then(|profile| profile.dev_token_file)
            .map(|admin| admin.with_file_name(&file_name))
            .filter(|path| path.exists())
    };
    // The last dev started comes first: a `.userimport` folder here may be an older dev's,
    // whose token the running one does not accept.
    let path = match file {
        Some(path) => path.to_owned(),
        None => match noted() {
            Some(path) => path,
            None if default.exists() => default,
            None => return Ok(None),
        },
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read the token file {}", path.display()))?;
    anyhow::ensure!(
        !text.trim().is_empty(),
        "the token file {} is empty",
        path.display()
    );
    Ok(Some(secrecy::SecretString::from(text.trim().to_owned())))
}
