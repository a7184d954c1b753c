//! Directory changes applied to registry users (a delta sync's changes, issue 8): a new
//! display name, a new sign-in alias after a UPN rename, or a new enabled state. The user id
//! never changes.

use crate::domain::user::{MAX_ALIAS_LEN, MAX_NAME_LEN, parse_guid};
use crate::error::Error;

/// A validated change of one user; `None` fields stay as they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserChange {
    pub tenant_id: String,
    pub object_id: String,
    pub name: Option<String>,
    pub network_alias: Option<String>,
    pub enabled: Option<bool>,
    /// `Some(true)`: the directory hard-deleted the user; mark it (the first time counts).
    /// `Some(false)`: the directory holds it again; clear a mark. `None`: leave the mark.
    pub deleted_in_directory: Option<bool>,
    /// Delete the user and its grants (the opt-in policy for hard-deleted users).
    pub delete: bool,
}

impl UserChange {
    /// Validates a change; the error names the field and fails this change alone. Names are
    /// cleaned as at import (control characters become spaces, cut to the maximum length).
    pub fn parse(
        tenant_id: &str,
        object_id: &str,
        name: Option<&str>,
        network_alias: Option<&str>,
        enabled: Option<bool>,
    ) -> Result<Self, Error> {
        let tenant_id = parse_guid("tenant_id", tenant_id)?;
        let object_id = parse_guid("object_id", object_id)?;
        let name = name
            .map(|raw| {
                let cleaned: String = raw
                    .chars()
                    .map(|c| if c.is_control() { ' ' } else { c })
                    .collect();
                let trimmed = cleaned.trim();
                if trimmed.is_empty() {
                    return Err(Error::invalid("name", "must not be empty"));
                }
                Ok(trimmed.chars().take(MAX_NAME_LEN).collect::<String>())
            })
            .transpose()?;
        let network_alias = network_alias
            .map(|raw| {
                let alias = raw.trim();
                if alias.is_empty() || alias.len() > MAX_ALIAS_LEN {
                    return Err(Error::invalid(
                        "network_alias",
                        format!("must be 1 to {MAX_ALIAS_LEN} bytes"),
                    ));
                }
                if !alias.contains('@')
                    || alias.chars().any(|c| c.is_control() || c.is_whitespace())
                {
                    return Err(Error::invalid(
                        "network_alias",
                        format!(
                            "{} is not a sign-in name",
                            service_runtime::error::quote(alias)
                        ),
                    ));
                }
                Ok(alias.to_owned())
            })
            .transpose()?;
        Ok(Self {
            tenant_id,
            object_id,
            name,
            network_alias,
            enabled,
            deleted_in_directory: None,
            delete: false,
        })
    }
}

/// What became of one change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateKind {
    Updated,
    Unchanged,
    NotFound,
    Failed,
    Deleted,
}

/// The outcome of one change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateOutcome {
    pub object_id: String,
    pub kind: UpdateKind,
    pub user_id: String,
    /// `name`, `network_alias`, `enabled`, `deleted_in_directory`, `deleted`: what changed
    /// (or would, in a dry run).
    pub changed: Vec<&'static str>,
    pub reason: String,
    /// The user's enabled state after the change (false when there is no user).
    pub enabled: bool,
}
