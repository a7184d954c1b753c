//! The command line: every command and option of `userimport`, as clap reads them.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use cli::admin::{AuditListArgs, RoleChangeArgs};
use cli::commands::{self, DirectoryListArgs, UsersListArgs};
use cli::output::Format;

/// Import people from Microsoft Entra ID into the ERP's user registry.
#[derive(Debug, Parser)]
#[command(name = "userimport", version, about)]
pub(crate) struct Cli {
    /// directory-sync's gRPC address.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "USERIMPORT_DIRECTORY_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    pub(crate) directory_url: String,
    /// user-registry's gRPC address.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "USERIMPORT_REGISTRY_URL",
        default_value = "http://127.0.0.1:50052"
    )]
    pub(crate) registry_url: String,
    /// import-worker's gRPC address.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "USERIMPORT_IMPORTER_URL",
        default_value = "http://127.0.0.1:50053"
    )]
    pub(crate) importer_url: String,
    /// Who you act as against services in insecure development mode (ignored by services
    /// that verify tokens).
    #[arg(
        long = "as",
        global = true,
        help_heading = "Global options",
        env = "USERIMPORT_PRINCIPAL",
        default_value = "admin"
    )]
    pub(crate) principal: String,
    /// A file holding your bearer token (default: `.userimport/admin.token`, which
    /// `userimport dev` writes, when it exists). USERIMPORT_TOKEN gives the token itself.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "USERIMPORT_TOKEN_FILE"
    )]
    pub(crate) token_file: Option<PathBuf>,
    /// CA certificates (PEM) to trust for `https://` service URLs.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "USERIMPORT_TLS_CA_FILE"
    )]
    pub(crate) tls_ca_file: Option<PathBuf>,
    /// A client certificate (PEM) for services that require mutual TLS.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "USERIMPORT_TLS_CERT_FILE",
        requires = "tls_key_file"
    )]
    pub(crate) tls_cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "USERIMPORT_TLS_KEY_FILE"
    )]
    pub(crate) tls_key_file: Option<PathBuf>,
    /// How to print results.
    #[arg(
        long,
        short,
        global = true,
        value_enum,
        env = "USERIMPORT_OUTPUT",
        default_value = "table"
    )]
    pub(crate) output: Format,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
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
    /// The SCIM endpoint Entra's app provisioning pushes to (directory-sync's scim.enabled).
    #[command(subcommand)]
    Scim(ScimCommand),
}

#[derive(Debug, Subcommand)]
pub(crate) enum ScimCommand {
    /// Bearer secrets for Entra's "Secret Token" field (administrators only).
    #[command(subcommand)]
    Tokens(ScimTokensCommand),
}

#[derive(Debug, Subcommand)]
pub(crate) enum ScimTokensCommand {
    /// Makes a token and prints its secret, once: paste it into Entra's "Secret Token".
    Create {
        /// What the token is for, e.g. entra-prod.
        #[arg(long)]
        name: String,
    },
    /// Lists the tokens (never their secrets), newest first.
    List,
    /// Revokes a token: requests bearing its secret are refused from now on. Rotate by
    /// creating the next token in Entra before revoking the last.
    Revoke { token_id: String },
}

#[derive(Debug, Subcommand)]
pub(crate) enum RulesCommand {
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
pub(crate) enum SyncCommand {
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
pub(crate) enum RolesCommand {
    /// Lists the role catalog.
    List,
}

#[derive(Debug, Subcommand)]
pub(crate) enum AuditCommand {
    /// Lists audit events, newest first.
    List(AuditListArgs),
}

#[derive(Debug, Subcommand)]
pub(crate) enum DirectoryCommand {
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
pub(crate) enum BatchCommand {
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
pub(crate) enum JobsCommand {
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
pub(crate) enum UsersCommand {
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
pub(crate) enum CompanyCommand {
    /// Makes CODE your current company (it must exist in the registry); kept in your profile.
    Use { code: String },
}

#[derive(Debug, Subcommand)]
pub(crate) enum CompaniesCommand {
    /// Lists companies.
    List,
    /// Creates a company (code: 1 to 4 letters or digits).
    Create {
        code: String,
        #[arg(long, default_value = "")]
        name: String,
    },
}
