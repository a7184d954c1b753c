//! What each command does: the one `match` from a parsed command line to the library's
//! commands, and the helpers only it uses.

use std::path::PathBuf;

use anyhow::Context as _;
use cli::admin;
use cli::commands::{self, Endpoints};
use cli::output::{Format, note, print};

use crate::args::{
    AuditCommand, BatchCommand, Cli, Command, CompaniesCommand, CompanyCommand, DirectoryCommand,
    JobsCommand, RolesCommand, RulesCommand, ScimCommand, ScimTokensCommand, SyncCommand,
    UsersCommand,
};

pub(crate) async fn run(cli: Cli) -> anyhow::Result<()> {
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
        Command::Scim(ScimCommand::Tokens(ScimTokensCommand::Create { name })) => {
            let (token, secret) = commands::scim_token_create(&endpoints, &name).await?;
            match format {
                Format::Json => {
                    println!("{}", serde_json::json!({"token": token, "secret": secret}))
                }
                Format::Table | Format::Csv => {
                    println!("token {} ({}) created.", token.token_id, token.name);
                    println!("secret (shown once; paste it into Entra's Secret Token field):");
                    println!("{secret}");
                }
            }
            Ok(())
        }
        Command::Scim(ScimCommand::Tokens(ScimTokensCommand::List)) => {
            print(format, &commands::scim_token_list(&endpoints).await?)
        }
        Command::Scim(ScimCommand::Tokens(ScimTokensCommand::Revoke { token_id })) => {
            let token = commands::scim_token_revoke(&endpoints, &token_id).await?;
            print(format, &[token])
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
