//! Group-scoped reads: a group, and the users among its transitive members.

use serde_json::Value;
use serde_json::value::RawValue;
use url::Url;

use crate::client::{Call, encode_path_segment, names_an_object};
use crate::page::{USER_TYPE, entry_value, odata_type, parse_page};
use crate::throttle::names;
use crate::users::{GraphUser, RejectedUser, USER_SELECT};
use crate::{Error, GraphClient};

/// A group as read from Graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphGroup {
    /// Object id.
    pub id: String,
    /// `displayName`.
    pub display_name: Option<String>,
}

/// One page of a group's transitive members, reduced to users.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupUsersPage {
    /// Members that are users (also those reached through nested groups, once each).
    pub users: Vec<GraphUser>,
    /// User entries that were not usable, each with the reason.
    pub rejected: Vec<RejectedUser>,
    /// Members that are not users (nested groups, devices, contacts, service principals):
    /// dropped, and counted here.
    pub skipped_non_users: usize,
}

enum Member {
    User(GraphUser),
    Other(String),
    Rejected(RejectedUser),
}

fn member_entry(raw: &RawValue) -> Member {
    let entry = match entry_value(raw) {
        Ok(entry) => entry,
        Err(rejected) => return Member::Rejected(rejected),
    };
    match odata_type(&entry) {
        Some(kind) if kind.eq_ignore_ascii_case(USER_TYPE) => match GraphUser::try_from(entry) {
            Ok(user) => Member::User(user),
            Err(rejected) => Member::Rejected(rejected),
        },
        Some(kind) => Member::Other(kind.trim_start_matches("#microsoft.graph.").to_owned()),
        None => Member::Rejected(RejectedUser {
            id: entry.get("id").and_then(Value::as_str).map(str::to_owned),
            reason: "member without @odata.type".to_owned(),
        }),
    }
}

/// The users among a group's transitive members, fetched by [`GroupUserPages::next_page`].
#[derive(Debug)]
pub struct GroupUserPages {
    client: GraphClient,
    group_id: String,
    next: Result<Option<Url>, String>,
}

impl GraphClient {
    /// Reads a group (`GET /v1.0/groups/{id}?$select=id,displayName`); `Ok(None)` if Graph
    /// answers 404.
    pub async fn get_group(&self, id: &str) -> Result<Option<GraphGroup>, Error> {
        if !names_an_object(id) {
            return Ok(None);
        }
        let url = self.graph_url(&format!(
            "/v1.0/groups/{}?$select=id,displayName",
            encode_path_segment(id)
        ))?;
        match self.send_json::<Value>(&url).await {
            Ok(entry) => {
                let group_id = entry
                    .get("id")
                    .and_then(Value::as_str)
                    .filter(|id| !id.trim().is_empty())
                    .ok_or_else(|| Error::Decode(format!("group {id}: no id")))?;
                Ok(Some(GraphGroup {
                    id: group_id.to_owned(),
                    display_name: entry
                        .get("displayName")
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                }))
            }
            Err(Error::Graph { status: 404, .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Lists the users among a group's transitive members:
    /// `GET /v1.0/groups/{id}/transitiveMembers?$select=USER_SELECT&$top=page_size` (5 RU,
    /// 4 with `$select`), following nextLinks verbatim. Members that are not users are
    /// dropped and counted; a group that does not exist is [`Error::NotFound`].
    pub fn group_users(&self, group_id: &str) -> GroupUserPages {
        let next = if names_an_object(group_id) {
            self.graph_url(&format!(
                "/v1.0/groups/{}/transitiveMembers?$select={USER_SELECT}&$top={}",
                encode_path_segment(group_id),
                self.config().page_size
            ))
            .map(Some)
            .map_err(|e| e.to_string())
        } else {
            Err(format!("{group_id:?} is not a group id"))
        };
        GroupUserPages {
            client: self.clone(),
            group_id: group_id.to_owned(),
            next,
        }
    }
}

impl GroupUserPages {
    /// Fetches the next page, or returns `None` after the last one. Pages may be empty.
    pub async fn next_page(&mut self) -> Result<Option<GroupUsersPage>, Error> {
        let url = match &self.next {
            Ok(None) => return Ok(None),
            Ok(Some(url)) => url,
            Err(message) => return Err(Error::InvalidConfig(message.clone())),
        };
        let parsed = match self
            .client
            .call(Call::get(url), |body| {
                parse_page(body, "transitiveMembers", member_entry)
            })
            .await
        {
            Ok(parsed) => parsed,
            Err(Error::Graph { status: 404, .. }) => {
                return Err(Error::NotFound {
                    resource: format!("group {}", self.group_id),
                });
            }
            Err(error) => return Err(error),
        };
        let next = match parsed.next_link {
            None => None,
            Some(link) => Some(self.client.check_next_link(&link, url)?),
        };
        let mut page = GroupUsersPage::default();
        for entry in parsed.entries {
            match entry {
                Member::User(user) => page.users.push(user),
                Member::Rejected(rejected) => page.rejected.push(rejected),
                Member::Other(kind) => {
                    page.skipped_non_users += 1;
                    metrics::counter!(names::SKIPPED_MEMBERS, "type" => kind).increment(1);
                }
            }
        }
        if !page.rejected.is_empty() {
            metrics::counter!(names::REJECTED, "kind" => "members")
                .increment(page.rejected.len() as u64);
        }
        if page.skipped_non_users > 0 {
            tracing::debug!(
                group_id = %self.group_id,
                skipped = page.skipped_non_users,
                "non-user group members dropped"
            );
        }
        self.next = Ok(next);
        Ok(Some(page))
    }
}
