//! The users in the directory's deleted items: soft-deleted, restorable for 30 days
//! (`GET /directory/deletedItems/microsoft.graph.user`, application permission
//! `User.Read.All`, the one `/users` needs). A user missing from `/users` but listed here can
//! still come back; a user missing from both is gone for good.

use serde_json::Value;
use serde_json::value::RawValue;
use url::Url;

use crate::client::Call;
use crate::page::{entry_value, parse_page};
use crate::throttle::names;
use crate::users::RejectedUser;
use crate::{Error, GraphClient};

/// One page of the deleted users.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeletedUsersPage {
    /// Object ids of the restorable users on this page.
    pub ids: Vec<String>,
    /// Entries without a usable id, each with the reason. A caller that concludes "not
    /// restorable" from absence must not do so while any entry was rejected: the rejected one
    /// may be the user it is about to give up.
    pub rejected: Vec<RejectedUser>,
}

fn deleted_entry(raw: &RawValue) -> Result<String, RejectedUser> {
    let entry = entry_value(raw)?;
    match entry.get("id").and_then(Value::as_str).map(str::trim) {
        Some(id) if !id.is_empty() => Ok(id.to_owned()),
        _ => Err(RejectedUser {
            id: None,
            reason: "deleted item without an id".to_owned(),
        }),
    }
}

/// The pages of the deleted users, fetched one at a time by [`DeletedUserPages::next_page`].
#[derive(Debug)]
pub struct DeletedUserPages {
    client: GraphClient,
    next: Result<Option<Url>, String>,
}

impl GraphClient {
    /// Lists the soft-deleted (restorable) users:
    /// `GET /v1.0/directory/deletedItems/microsoft.graph.user?$select=id&$top=page_size`,
    /// then each `@odata.nextLink` verbatim until there is none.
    pub fn deleted_users(&self) -> DeletedUserPages {
        let next = self
            .graph_url(&format!(
                "/v1.0/directory/deletedItems/microsoft.graph.user?$select=id&$top={}",
                self.config().page_size
            ))
            .map(Some)
            .map_err(|e| e.to_string());
        DeletedUserPages {
            client: self.clone(),
            next,
        }
    }
}

impl DeletedUserPages {
    /// Fetches the next page, or returns `None` after the last one. Pages may be empty; after
    /// an error the position is unchanged, so calling again retries that page.
    pub async fn next_page(&mut self) -> Result<Option<DeletedUsersPage>, Error> {
        let url = match &self.next {
            Ok(None) => return Ok(None),
            Ok(Some(url)) => url,
            Err(message) => return Err(Error::InvalidConfig(message.clone())),
        };
        let parsed = self
            .client
            .call(Call::get(url), |body| {
                parse_page(body, "deletedItems", deleted_entry)
            })
            .await?;
        let next = match parsed.next_link {
            None => None,
            Some(link) => Some(self.client.check_next_link(&link, url)?),
        };
        let mut page = DeletedUsersPage::default();
        for entry in parsed.entries {
            match entry {
                Ok(id) => page.ids.push(id),
                Err(rejected) => page.rejected.push(rejected),
            }
        }
        if !page.rejected.is_empty() {
            metrics::counter!(names::REJECTED, "kind" => "deleted_items")
                .increment(page.rejected.len() as u64);
        }
        self.next = Ok(next);
        Ok(Some(page))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_without_an_id_is_rejected_and_the_others_kept() {
        let parsed = parse_page(
            br##"{"value":[
                {"@odata.type":"#microsoft.graph.user","id":"a","deletedDateTime":"2024-05-01T10:00:00Z"},
                {"id":""},
                {"displayName":"no id"},
                {"id":"b"}
            ]}"##,
            "deletedItems",
            deleted_entry,
        )
        .unwrap();
        let ids: Vec<&str> = parsed
            .entries
            .iter()
            .filter_map(|e| e.as_deref().ok())
            .collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(parsed.entries.iter().filter(|e| e.is_err()).count(), 2);
    }
}
