//! directory-sync's core: mirrored users, sync runs and listing filters. Imports none of
//! tonic, sqlx or reqwest.

pub mod effects;
pub mod scim;
pub mod sync_run;
pub mod user;

pub use effects::{
    ImportKind, ImportOutcome, RuleChange, RuleChanges, UpdateKind, UpdateOutcome, UserChange,
};
pub use sync_run::{SyncMode, SyncRun, SyncRunStatus};
pub use user::{AccountType, DeletionState, ListFilter, MirrorUser};
