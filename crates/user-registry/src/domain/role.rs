//! Security roles and their grants. Imported users arrive with none (as in D365); an
//! administrator grants them afterwards, for every company or for one.

use crate::domain::CompanyCode;
use crate::error::Error;

/// A role id: 1 to 40 letters, digits, `-` or `_`, matched case-insensitively and stored
/// upper-case (`SYSADMIN`, `AP_CLERK`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoleId(String);

impl RoleId {
    pub const MAX_LEN: usize = 40;

    pub fn parse(raw: &str) -> Result<Self, Error> {
        let id = raw.trim();
        if id.is_empty() {
            return Err(Error::invalid("role_ids", "a role id must not be empty"));
        }
        if id.len() > Self::MAX_LEN
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        {
            return Err(Error::invalid(
                "role_ids",
                format!(
                    "{id:?} is not a role id (1 to {} letters, digits, '-' or '_')",
                    Self::MAX_LEN
                ),
            ));
        }
        Ok(Self(id.to_ascii_uppercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for RoleId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A role of the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    pub role_id: String,
    pub name: String,
    pub description: String,
    /// A grant always covers every company (System administrator, System user); otherwise a
    /// grant names one company, or none to cover them all.
    pub all_companies: bool,
}

/// Where a grant applies: every company, or one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    AllCompanies,
    Company(CompanyCode),
}

impl Scope {
    /// How the scope is stored: `''` for every company (a key column cannot be NULL).
    pub fn as_str(&self) -> &str {
        match self {
            Self::AllCompanies => "",
            Self::Company(code) => code.as_str(),
        }
    }
}

/// A role held by a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub role_id: String,
    /// Empty for a grant covering every company.
    pub company: String,
    /// `manual` and/or `rule:<rule id>`: who holds the grant.
    pub sources: Vec<String>,
}
