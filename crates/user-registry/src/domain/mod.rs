//! The registry's core: users, companies, user-id allocation rules and import outcomes.
//! Imports none of tonic, sqlx or reqwest.

pub mod company;
pub mod user;
pub mod user_id;

pub use company::{Company, CompanyCode};
pub use user::{AccountType, ImportOutcome, NewUser, OutcomeKind, RegistryUser};
