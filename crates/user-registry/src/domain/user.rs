//! Registry users, the users an import brings, and what happened to each.

use crate::error::Error;

/// Member or guest (an invited external user).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountType {
    Member,
    Guest,
}

impl AccountType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Member => "member",
            Self::Guest => "guest",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, Error> {
        match raw {
            "member" => Ok(Self::Member),
            "guest" => Ok(Self::Guest),
            other => Err(Error::invalid(
                "account_type",
                format!("unknown account type {other:?}"),
            )),
        }
    }
}

/// A user of the ERP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryUser {
    pub user_id: String,
    pub tenant_id: String,
    pub object_id: String,
    pub network_alias: String,
    pub network_domain: String,
    pub email: String,
    pub name: String,
    pub enabled: bool,
    pub company: String,
    pub account_type: AccountType,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub created_by_import: String,
    /// When the directory hard-deleted the user; 0 while it has not.
    pub deleted_in_directory_at_ms: i64,
}

/// A user an import asks to create, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUser {
    pub tenant_id: String,
    pub object_id: String,
    pub network_alias: String,
    pub network_domain: String,
    pub email: String,
    pub name: String,
    pub enabled: bool,
    pub account_type: AccountType,
    /// Set when the display name had to be shortened.
    pub name_truncated: bool,
}

/// The longest display name kept; longer names are truncated and the outcome notes it.
pub const MAX_NAME_LEN: usize = 100;
/// The longest sign-in alias accepted (a UPN is at most 113 characters in Entra; mail 256).
pub const MAX_ALIAS_LEN: usize = 256;

/// The fields of a user to import as they arrive, before validation.
#[derive(Debug, Clone, Default)]
pub struct RawNewUser {
    pub tenant_id: String,
    pub object_id: String,
    pub network_alias: String,
    pub network_domain: String,
    pub email: String,
    pub name: String,
    pub enabled: bool,
    pub account_type: Option<AccountType>,
}

impl NewUser {
    /// Validates one user. The error names the field and is reported for this user alone.
    pub fn parse(raw: RawNewUser) -> Result<Self, Error> {
        let tenant_id = parse_guid("tenant_id", &raw.tenant_id)?;
        let object_id = parse_guid("object_id", &raw.object_id)?;
        let network_alias = raw.network_alias.trim().to_owned();
        reject_control_characters("network_alias", &network_alias)?;
        reject_control_characters("network_domain", &raw.network_domain)?;
        reject_control_characters("email", &raw.email)?;
        if network_alias.is_empty() {
            return Err(Error::invalid("network_alias", "must not be empty"));
        }
        if network_alias.len() > MAX_ALIAS_LEN {
            return Err(Error::invalid(
                "network_alias",
                format!("must be at most {MAX_ALIAS_LEN} bytes"),
            ));
        }
        if !network_alias.contains('@') {
            return Err(Error::invalid(
                "network_alias",
                format!(
                    "{} is not a sign-in name (no '@')",
                    service_runtime::error::quote(&network_alias)
                ),
            ));
        }
        let network_domain = raw.network_domain.trim().to_owned();
        if network_domain.is_empty() {
            return Err(Error::invalid("network_domain", "must not be empty"));
        }
        let email = match raw.email.trim() {
            "" => network_alias.clone(),
            email => email.to_owned(),
        };
        let account_type = raw
            .account_type
            .ok_or_else(|| Error::invalid("account_type", "must be member or guest"))?;
        // A display name keeps its text; control characters (tabs, line breaks) become spaces.
        let cleaned: String = raw
            .name
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let trimmed = cleaned.trim();
        let name_source = if trimmed.is_empty() {
            network_alias.as_str()
        } else {
            trimmed
        };
        let name_truncated = name_source.chars().count() > MAX_NAME_LEN;
        let name: String = name_source.chars().take(MAX_NAME_LEN).collect();
        Ok(Self {
            tenant_id,
            object_id,
            network_alias,
            network_domain,
            email,
            name,
            enabled: raw.enabled,
            account_type,
            name_truncated,
        })
    }
}

fn reject_control_characters(field: &'static str, value: &str) -> Result<(), Error> {
    match value.chars().find(|c| c.is_control()) {
        Some(c) => Err(Error::invalid(
            field,
            format!("contains the control character {c:?}"),
        )),
        None => Ok(()),
    }
}

/// Parses a GUID such as an Entra object or tenant id, returning its lower-case form.
pub fn parse_guid(field: &'static str, raw: &str) -> Result<String, Error> {
    service_runtime::normalize_guid(raw).ok_or_else(|| {
        Error::invalid(
            field,
            format!(
                "{} is not a GUID",
                service_runtime::error::quote(raw.trim())
            ),
        )
    })
}

/// What an import did with one user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeKind {
    Created,
    AlreadyPresent,
    Skipped,
    Failed,
}

/// One user's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportOutcome {
    pub object_id: String,
    pub kind: OutcomeKind,
    pub user_id: String,
    pub reason: String,
    pub note: String,
}

impl ImportOutcome {
    pub fn failed(object_id: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            object_id: object_id.into(),
            kind: OutcomeKind::Failed,
            user_id: String::new(),
            reason: reason.into(),
            note: String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw() -> RawNewUser {
        RawNewUser {
            tenant_id: "11111111-2222-3333-4444-555555555555".into(),
            object_id: "6EA91A8D-E32E-41A1-B7BD-D2D185EED0E0".into(),
            network_alias: "adams@contoso.com".into(),
            network_domain: "https://sts.windows.net/".into(),
            email: String::new(),
            name: "  Conf Room Adams ".into(),
            enabled: true,
            account_type: Some(AccountType::Member),
        }
    }

    #[test]
    fn object_ids_are_lower_cased_and_names_trimmed() {
        let user = NewUser::parse(raw()).unwrap();
        assert_eq!(user.object_id, "6ea91a8d-e32e-41a1-b7bd-d2d185eed0e0");
        assert_eq!(user.name, "Conf Room Adams");
        assert_eq!(user.email, "adams@contoso.com");
    }

    #[test]
    fn a_malformed_object_id_names_the_field() {
        let err = NewUser::parse(RawNewUser {
            object_id: "not-a-guid".into(),
            ..raw()
        })
        .unwrap_err();
        assert!(err.to_string().contains("object_id"), "{err}");
    }

    #[test]
    fn long_display_names_are_truncated_and_flagged() {
        let user = NewUser::parse(RawNewUser {
            name: "x".repeat(500),
            ..raw()
        })
        .unwrap();
        assert_eq!(user.name.chars().count(), MAX_NAME_LEN);
        assert!(user.name_truncated);
    }

    #[test]
    fn control_characters_fail_an_alias_and_become_spaces_in_a_name() {
        let err = NewUser::parse(RawNewUser {
            network_alias: "a\tb@contoso.com".into(),
            ..raw()
        })
        .unwrap_err();
        assert!(err.to_string().contains("network_alias"), "{err}");
        let user = NewUser::parse(RawNewUser {
            name: "Ada\nLovelace\t".into(),
            ..raw()
        })
        .unwrap();
        assert_eq!(user.name, "Ada Lovelace");
    }

    #[test]
    fn an_alias_without_at_sign_is_rejected() {
        assert!(
            NewUser::parse(RawNewUser {
                network_alias: "adams".into(),
                ..raw()
            })
            .is_err()
        );
    }
}
