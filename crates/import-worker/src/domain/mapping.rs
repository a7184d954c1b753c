//! How a directory user becomes a registry user (after D365's own import; README "Limits and rules worth knowing"):
//!
//! - **Members** sign in with their `userPrincipalName`, which also becomes their email; their
//!   identity provider is the tenant's (`member_provider`, `https://sts.windows.net/` by default).
//! - **Guests** (`userType` Guest or `#EXT#` in the UPN) sign in with their `mail`; their
//!   provider is `guest_provider_prefix` followed by the mail's domain, or, for a Microsoft
//!   consumer account's mail (outlook.com, hotmail.com, live.com …), `consumer_provider`
//!   (`live.com`, D365's canonical provider for them). A guest **without mail**
//!   cannot sign in to the ERP and is **skipped** with a reason, as D365 does.
//! - A user the directory has deleted is skipped.
//! - `name` is the display name; `enabled` is `accountEnabled`. The registry allocates the user
//!   id and the caller's company becomes the default company. No roles are granted.

/// Member or guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountType {
    Member,
    Guest,
}

/// A directory user as directory-sync serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryUser {
    pub tenant_id: String,
    pub object_id: String,
    pub user_principal_name: String,
    pub mail: String,
    pub display_name: String,
    pub account_enabled: bool,
    pub account_type: AccountType,
    pub deleted: bool,
}

/// The identity providers the mapping assigns.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct MappingConfig {
    pub member_provider: String,
    pub guest_provider_prefix: String,
    /// Mail domains of Microsoft consumer accounts (outlook.com, hotmail.com, live.com …): a
    /// guest whose mail is one signs in with a Microsoft account, not through a tenant.
    #[serde(default = "default_consumer_domains")]
    pub consumer_domains: Vec<String>,
    /// The provider of such guests (D365's canonical provider for Microsoft accounts).
    #[serde(default = "default_consumer_provider")]
    pub consumer_provider: String,
}

fn default_consumer_domains() -> Vec<String> {
    [
        "outlook.com",
        "hotmail.com",
        "live.com",
        "msn.com",
        "passport.com",
        "hotmail.co.uk",
        "hotmail.fr",
        "hotmail.de",
        "live.co.uk",
        "live.fr",
        "live.de",
        "outlook.fr",
        "outlook.de",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect()
}

fn default_consumer_provider() -> String {
    "live.com".to_owned()
}

impl Default for MappingConfig {
    fn default() -> Self {
        Self {
            member_provider: "https://sts.windows.net/".to_owned(),
            guest_provider_prefix: "https://sts.windows.net/".to_owned(),
            consumer_domains: default_consumer_domains(),
            consumer_provider: default_consumer_provider(),
        }
    }
}

/// A registry user to import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryCandidate {
    pub tenant_id: String,
    pub object_id: String,
    pub network_alias: String,
    pub network_domain: String,
    pub email: String,
    pub name: String,
    pub enabled: bool,
    pub account_type: AccountType,
}

/// Maps one directory user, or says why it is skipped.
pub fn map_user(user: &DirectoryUser, config: &MappingConfig) -> Result<RegistryCandidate, String> {
    if user.deleted {
        return Err("deleted in the directory".to_owned());
    }
    let (alias, provider) = match user.account_type {
        AccountType::Member => {
            if user.user_principal_name.trim().is_empty() {
                return Err("member without a user principal name".to_owned());
            }
            (
                user.user_principal_name.trim().to_owned(),
                config.member_provider.clone(),
            )
        }
        AccountType::Guest => {
            let mail = user.mail.trim();
            let Some((_, domain)) = mail
                .rsplit_once('@')
                .filter(|(local, domain)| !local.is_empty() && !domain.is_empty())
            else {
                return Err(if mail.is_empty() {
                    "guest without mail: a guest signs in with its mail address".to_owned()
                } else {
                    format!("guest mail {mail:?} is not an address")
                });
            };
            let domain = domain.to_ascii_lowercase();
            let provider = if config
                .consumer_domains
                .iter()
                .any(|consumer| consumer.eq_ignore_ascii_case(&domain))
            {
                config.consumer_provider.clone()
            } else {
                format!("{}{domain}", config.guest_provider_prefix)
            };
            (mail.to_owned(), provider)
        }
    };
    Ok(RegistryCandidate {
        tenant_id: user.tenant_id.clone(),
        object_id: user.object_id.clone(),
        email: alias.clone(),
        network_alias: alias,
        network_domain: provider,
        name: user.display_name.trim().to_owned(),
        enabled: user.account_enabled,
        account_type: user.account_type,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn member() -> DirectoryUser {
        DirectoryUser {
            tenant_id: "t".into(),
            object_id: "o".into(),
            user_principal_name: "Adele.Vance@contoso.com".into(),
            mail: "adele@contoso.com".into(),
            display_name: " Adele Vance ".into(),
            account_enabled: true,
            account_type: AccountType::Member,
            deleted: false,
        }
    }

    fn guest(mail: &str) -> DirectoryUser {
        DirectoryUser {
            user_principal_name: "jane_fabrikam.com#EXT#@contoso.com".into(),
            mail: mail.into(),
            account_type: AccountType::Guest,
            ..member()
        }
    }

    #[test]
    fn a_member_signs_in_with_the_upn_at_the_tenant_provider() {
        let mapped = map_user(&member(), &MappingConfig::default()).unwrap();
        assert_eq!(mapped.network_alias, "Adele.Vance@contoso.com");
        assert_eq!(mapped.email, "Adele.Vance@contoso.com");
        assert_eq!(mapped.network_domain, "https://sts.windows.net/");
        assert_eq!(mapped.name, "Adele Vance");
    }

    #[test]
    fn a_guest_signs_in_with_the_mail_at_the_provider_of_its_domain() {
        let mapped = map_user(&guest("jane@Fabrikam.com"), &MappingConfig::default()).unwrap();
        assert_eq!(mapped.network_alias, "jane@Fabrikam.com");
        assert_eq!(
            mapped.network_domain,
            "https://sts.windows.net/fabrikam.com"
        );
        assert_eq!(mapped.account_type, AccountType::Guest);
    }

    #[test]
    fn a_guest_without_mail_is_skipped_with_a_reason() {
        let reason = map_user(&guest(""), &MappingConfig::default()).unwrap_err();
        assert!(reason.contains("without mail"), "{reason}");
        assert!(map_user(&guest("nobody"), &MappingConfig::default()).is_err());
    }

    #[test]
    fn a_disabled_member_is_imported_disabled() {
        let mapped = map_user(
            &DirectoryUser {
                account_enabled: false,
                ..member()
            },
            &MappingConfig::default(),
        )
        .unwrap();
        assert!(!mapped.enabled);
    }

    #[test]
    fn a_guest_with_a_consumer_account_gets_the_microsoft_account_provider() {
        let config = MappingConfig::default();
        for mail in ["jane@outlook.com", "Jane@Hotmail.com", "jane@live.co.uk"] {
            let mapped = map_user(&guest(mail), &config).unwrap();
            assert_eq!(mapped.network_domain, "live.com", "{mail}");
            assert_eq!(mapped.network_alias, mail);
        }
        let business = map_user(&guest("jane@fabrikam.com"), &config).unwrap();
        assert_eq!(
            business.network_domain,
            "https://sts.windows.net/fabrikam.com"
        );
    }

    #[test]
    fn a_deleted_user_is_skipped() {
        assert!(
            map_user(
                &DirectoryUser {
                    deleted: true,
                    ..member()
                },
                &MappingConfig::default()
            )
            .is_err()
        );
    }

    proptest! {
        #[test]
        fn every_guest_with_an_address_maps_to_its_mail(local in "[a-z0-9._]{1,20}", domain in "[a-z]{1,10}\\.[a-z]{2,3}") {
            let mail = format!("{local}@{domain}");
            let mapped = map_user(&guest(&mail), &MappingConfig::default()).unwrap();
            prop_assert_eq!(&mapped.network_alias, &mail);
            prop_assert!(mapped.network_domain.ends_with(&domain));
        }
    }
}
