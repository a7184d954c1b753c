//! Statements of this process's imports that would queue on each other's locks in Postgres
//! run here one at a time instead (issue 17).
//!
//! - **Bulk inserts, one per table.** Every page a new row needs past a table's end is added
//!   under that table's extension lock, one page at a time in Postgres 15, and a 1,000-user
//!   import fills some 40 pages of `users` and as many of `audit_events`. With several imports
//!   inserting into one table at once, their page additions queued on each other: a tenth of
//!   the statements sampled during a 1M batch waited on `[extend]` locks. So an import inserts
//!   its users only while it holds the users lane, and its audit rows only while it holds the
//!   audit lane. The lanes are separate, so one import writes its audit rows while the next
//!   writes its users; the probe, the numbering and the commit of every import run
//!   concurrently as before.
//! - **Suffix reservations.** A reservation updates one counter row per base and commits at
//!   once; two imports of common names reserving the same base at the same moment made the
//!   second wait for the first's commit.
//!
//! No lock cycle can form: an import enters the users lane holding no row another import
//! could wait on there (its own users are inserted inside it), an import in a lane waits in
//! Postgres only on imports that are past that lane, which need no lane to finish, and a
//! reservation holds nothing of its import's transaction. Replicas do not share lanes; between
//! them Postgres's locks work as before.

use tokio::sync::{Mutex, MutexGuard};

#[derive(Debug, Default)]
pub(super) struct Lanes {
    users: Mutex<()>,
    audit: Mutex<()>,
    suffixes: Mutex<()>,
}

impl Lanes {
    /// Held while an import inserts into `users`.
    pub(super) async fn users(&self) -> MutexGuard<'_, ()> {
        self.users.lock().await
    }

    /// Held while an import inserts into `audit_events`.
    pub(super) async fn audit(&self) -> MutexGuard<'_, ()> {
        self.audit.lock().await
    }

    /// Held while a block of suffix numbers is reserved and committed.
    pub(super) async fn suffixes(&self) -> MutexGuard<'_, ()> {
        self.suffixes.lock().await
    }
}
