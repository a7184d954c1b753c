//! A user as the mirror holds it.

/// Member or guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountType {
    Member,
    Guest,
}

impl AccountType {
    /// Graph marks guests with `userType` Guest; their UPN also always contains `#EXT#`.
    /// Either sign is enough, since `userType` is only returned on `$select`.
    pub fn classify(user_type: Option<&str>, user_principal_name: &str) -> Self {
        let guest_type = user_type.is_some_and(|t| t.eq_ignore_ascii_case("guest"));
        if guest_type || user_principal_name.to_ascii_uppercase().contains("#EXT#") {
            Self::Guest
        } else {
            Self::Member
        }
    }
}

service_runtime::text_enum!(AccountType { Member => "member", Guest => "guest" });

/// Whether the directory still lists the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeletionState {
    Present,
    /// Deleted but restorable (Graph's `@removed` reason `changed`).
    SoftDeleted,
    /// Gone for good: `@removed` reason `deleted`, or missing from a full sync's `/users` and
    /// from the deleted items it read completely. Never concluded from `/users` alone.
    HardDeleted,
}

service_runtime::text_enum!(DeletionState {
    Present => "present",
    SoftDeleted => "soft_deleted",
    HardDeleted => "hard_deleted",
});

/// A mirrored directory user. Absent strings are empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorUser {
    pub tenant_id: String,
    pub object_id: String,
    pub user_principal_name: String,
    pub mail: String,
    pub display_name: String,
    pub given_name: String,
    pub surname: String,
    pub account_enabled: bool,
    pub account_type: AccountType,
    pub deletion_state: DeletionState,
    /// Last written by a SCIM push (Entra's app provisioning), not read from Graph. Not part
    /// of the content: the same user from either source is the same user.
    pub pushed: bool,
}

impl MirrorUser {
    /// A stable 64-bit FNV-1a hash of the directory-owned fields, so a full sync can tell a
    /// changed user from an unchanged one without reading it first.
    pub fn content_hash(&self) -> i64 {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let fields = [
            self.user_principal_name.as_str(),
            self.mail.as_str(),
            self.display_name.as_str(),
            self.given_name.as_str(),
            self.surname.as_str(),
            if self.account_enabled { "1" } else { "0" },
            self.account_type.as_str(),
        ];
        for field in fields {
            for byte in field.bytes().chain(std::iter::once(0xff)) {
                hash ^= u64::from(byte);
                hash = hash.wrapping_mul(0x0100_0000_01b3);
            }
        }
        i64::from_ne_bytes(hash.to_ne_bytes())
    }
}

/// Filters of the select-import listing.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Case-insensitive prefix of display name, UPN or mail.
    pub search: String,
    pub enabled_only: bool,
    pub account_type: Option<AccountType>,
    /// Only the (transitive) members of this directory group.
    pub group_id: Option<String>,
    /// Only members of a synced group (`sync.groups` is set): the tenant's scope.
    pub in_synced_groups: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guest_is_recognised_by_user_type_or_by_ext_in_the_upn() {
        assert_eq!(
            AccountType::classify(Some("Guest"), "a@contoso.com"),
            AccountType::Guest
        );
        assert_eq!(
            AccountType::classify(None, "jane_fabrikam.com#EXT#@contoso.com"),
            AccountType::Guest
        );
        assert_eq!(
            AccountType::classify(Some("Member"), "a@contoso.com"),
            AccountType::Member
        );
    }

    #[test]
    fn the_content_hash_changes_with_any_directory_field() {
        let user = MirrorUser {
            tenant_id: "t".into(),
            object_id: "o".into(),
            user_principal_name: "a@b.c".into(),
            mail: String::new(),
            display_name: "A".into(),
            given_name: String::new(),
            surname: String::new(),
            account_enabled: true,
            account_type: AccountType::Member,
            deletion_state: DeletionState::Present,
            pushed: false,
        };
        let pushed = MirrorUser {
            pushed: true,
            ..user.clone()
        };
        assert_eq!(
            pushed.content_hash(),
            user.content_hash(),
            "the source is not content"
        );
        let renamed = MirrorUser {
            display_name: "B".into(),
            ..user.clone()
        };
        let disabled = MirrorUser {
            account_enabled: false,
            ..user.clone()
        };
        assert_eq!(user.content_hash(), user.clone().content_hash());
        assert_ne!(user.content_hash(), renamed.content_hash());
        assert_ne!(user.content_hash(), disabled.content_hash());
        // Field boundaries count: moving a character between fields changes the hash.
        let shifted = MirrorUser {
            given_name: "x".into(),
            surname: String::new(),
            ..user.clone()
        };
        let shifted2 = MirrorUser {
            given_name: String::new(),
            surname: "x".into(),
            ..user
        };
        assert_ne!(shifted.content_hash(), shifted2.content_hash());
    }
}
