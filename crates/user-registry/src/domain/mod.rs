//! The registry's core: users, companies, roles, user-id allocation rules, import outcomes
//! and the audit trail. Imports none of tonic, sqlx or reqwest.

pub mod audit;
pub mod company;
pub mod role;
pub mod update;
pub mod user;
pub mod user_id;

pub use company::{Company, CompanyCode};
pub use role::{Assignment, Role, RoleId, Scope};
pub use user::{AccountType, ImportOutcome, NewUser, OutcomeKind, RegistryUser};
