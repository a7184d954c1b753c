//! User objects as Graph returns them, and the paging of `GET /users`.

use serde::Deserialize;
use serde_json::Value;
use url::Url;

use crate::client::Call;
use crate::page::{USER_TYPE, odata_type, parse_page, user_entry};
use crate::throttle::names;
use crate::{Error, GraphClient};

/// The `$select` sent when listing and reading users.
pub const USER_SELECT: &str =
    "id,userPrincipalName,mail,displayName,givenName,surname,accountEnabled,userType";

/// A user as read from Graph (the properties of [`USER_SELECT`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphUser {
    /// Object id.
    pub id: String,
    /// `userPrincipalName`; guests' contain `#EXT#`.
    pub user_principal_name: String,
    /// `mail`, absent for many guests and unlicensed users.
    pub mail: Option<String>,
    /// `displayName`.
    pub display_name: Option<String>,
    /// `givenName`.
    pub given_name: Option<String>,
    /// `surname`.
    pub surname: Option<String>,
    /// `accountEnabled`.
    pub account_enabled: Option<bool>,
    /// `userType`: `Member` or `Guest`.
    pub user_type: Option<String>,
}

/// One page of `GET /users`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsersPage {
    /// Entries that parsed as users.
    pub users: Vec<GraphUser>,
    /// Entries that did not, each with the reason.
    pub rejected: Vec<RejectedUser>,
}

/// Query options of [`GraphClient::list_users_with`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListUsersOptions {
    /// `$filter`, e.g. `endsWith(userPrincipalName,'#EXT#@contoso.com')` (encoded for you).
    pub filter: Option<String>,
    /// `$search`, e.g. `displayName:wa` (quoted and encoded for you); needs eventual
    /// consistency, which is then requested.
    pub search: Option<String>,
    /// `$count=true`: the first page carries `@odata.count` ([`UserPages::count`]); needs
    /// eventual consistency, which is then requested.
    pub count: bool,
    /// Send `ConsistencyLevel: eventual` even without `search` or `count` (advanced
    /// `$filter`s such as `endsWith` or `ne` need it).
    pub eventual_consistency: bool,
}

impl ListUsersOptions {
    pub(crate) fn needs_eventual_consistency(&self) -> bool {
        self.eventual_consistency || self.count || self.search.is_some()
    }
}

/// A page entry that is not a usable user; the rest of its page is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedUser {
    /// The entry's `id`, if it had a string one.
    pub id: Option<String>,
    /// Why it was rejected, e.g. "missing field `userPrincipalName`".
    pub reason: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireUser {
    id: String,
    user_principal_name: String,
    #[serde(default)]
    mail: Option<String>,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    given_name: Option<String>,
    #[serde(default)]
    surname: Option<String>,
    #[serde(default)]
    account_enabled: Option<bool>,
    #[serde(default)]
    user_type: Option<String>,
}

impl TryFrom<Value> for GraphUser {
    type Error = RejectedUser;

    fn try_from(entry: Value) -> Result<Self, RejectedUser> {
        let id = entry.get("id").and_then(Value::as_str).map(str::to_owned);
        let reject = |reason: String| RejectedUser {
            id: id.clone(),
            reason,
        };
        if !entry.is_object() {
            let mut text = entry.to_string();
            if text.len() > 200 {
                let cut = (0..=200)
                    .rev()
                    .find(|i| text.is_char_boundary(*i))
                    .unwrap_or(0);
                text.truncate(cut);
                text.push('…');
            }
            return Err(reject(format!("entry is not an object: {text}")));
        }
        if let Some(kind) = odata_type(&entry)
            && !kind.eq_ignore_ascii_case(USER_TYPE)
        {
            return Err(reject(format!("unexpected @odata.type {kind:?}")));
        }
        let wire: WireUser = serde_json::from_value(entry).map_err(|e| reject(e.to_string()))?;
        if wire.id.trim().is_empty() {
            return Err(reject("empty id".to_owned()));
        }
        if wire.user_principal_name.trim().is_empty() {
            return Err(reject("empty userPrincipalName".to_owned()));
        }
        Ok(Self {
            id: wire.id,
            user_principal_name: wire.user_principal_name,
            mail: wire.mail,
            display_name: wire.display_name,
            given_name: wire.given_name,
            surname: wire.surname,
            account_enabled: wire.account_enabled,
            user_type: wire.user_type,
        })
    }
}

impl UsersPage {
    fn from_entries(entries: Vec<Result<GraphUser, RejectedUser>>) -> Self {
        let mut page = Self::default();
        for entry in entries {
            match entry {
                Ok(user) => page.users.push(user),
                Err(rejected) => page.rejected.push(rejected),
            }
        }
        if !page.rejected.is_empty() {
            metrics::counter!(names::REJECTED, "kind" => "users")
                .increment(page.rejected.len() as u64);
        }
        page
    }
}

/// The pages of a user listing, fetched one at a time by [`UserPages::next_page`].
#[derive(Debug)]
pub struct UserPages {
    client: GraphClient,
    next: Option<Url>,
    eventual: bool,
    count: Option<u64>,
}

impl UserPages {
    pub(crate) fn new(client: GraphClient, first: Url, eventual: bool) -> Self {
        Self {
            client,
            next: Some(first),
            eventual,
            count: None,
        }
    }

    /// Fetches the next page, or returns `None` after the last one.
    ///
    /// Pages may be empty; keep calling until `None`. `@odata.nextLink` is followed exactly as
    /// received. After an error the position is unchanged, so calling again retries that page.
    /// A page that is not valid JSON is fetched again a few times (the retry policy), then
    /// fails with [`Error::Decode`]; a broken entry only rejects itself.
    pub async fn next_page(&mut self) -> Result<Option<UsersPage>, Error> {
        let Some(url) = self.next.as_ref() else {
            return Ok(None);
        };
        let parsed = self
            .client
            .call(Call::get(url).eventual(self.eventual), |body| {
                parse_page(body, "users", user_entry)
            })
            .await?;
        let next = match parsed.next_link {
            None => None,
            Some(link) => Some(self.client.check_next_link(&link, url)?),
        };
        if self.count.is_none() {
            self.count = parsed.count;
        }
        self.next = next;
        Ok(Some(UsersPage::from_entries(parsed.entries)))
    }

    /// `@odata.count` of the first page, when `$count=true` was asked for.
    pub fn count(&self) -> Option<u64> {
        self.count
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_bad_entry_is_rejected_alone_with_its_reason() {
        let page = UsersPage::from_entries(
            vec![
            json!({"id": "a", "userPrincipalName": "a@contoso.com", "mail": null}),
            json!({"userPrincipalName": "no-id@contoso.com"}),
            json!({"id": "c", "userPrincipalName": "c@contoso.com", "accountEnabled": "yes"}),
            json!({"id": "d", "userPrincipalName": 42}),
            json!("not an object"),
            json!({"id": "", "userPrincipalName": "e@contoso.com"}),
            json!({"id": "f", "userPrincipalName": "f@contoso.com", "accountEnabled": false, "userType": "Guest"}),
        ]
            .into_iter()
            .map(GraphUser::try_from)
            .collect(),
        );
        let ids: Vec<&str> = page.users.iter().map(|u| u.id.as_str()).collect();
        assert_eq!(ids, ["a", "f"]);
        let rejected: Vec<Option<&str>> = page.rejected.iter().map(|r| r.id.as_deref()).collect();
        assert_eq!(rejected, [None, Some("c"), Some("d"), None, Some("")]);
        assert!(
            page.rejected[0].reason.contains("id"),
            "{:?}",
            page.rejected[0]
        );
        assert_eq!(page.users[1].account_enabled, Some(false));
        assert_eq!(page.users[0].mail, None);
    }
}
