//! import-worker's core: the directory-to-registry mapping, outcomes and jobs. Imports none of
//! tonic, sqlx or lapin.

pub mod job;
pub mod mapping;
pub mod rule;

pub use job::{
    BatchOptions, Counts, DEFAULT_BATCH_GROUP, Job, JobKind, JobStatus, Outcome, OutcomeKind,
};
pub use mapping::{AccountType, DirectoryUser, MappingConfig, RegistryCandidate, map_user};
pub use rule::{LISTED_RULE_CHANGES, RoleRule, RuleChange, RuleChanges};
