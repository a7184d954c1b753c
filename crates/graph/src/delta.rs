//! Incremental reads: `GET /users/delta` rounds ending in a deltaLink.

use serde_json::Value;
use serde_json::value::RawValue;
use url::Url;

use crate::client::Call;
use crate::page::{entry_value, parse_page};
use crate::throttle::names;
use crate::users::{GraphUser, RejectedUser, USER_SELECT};
use crate::{Error, GraphClient};

/// Where a delta round starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeltaStart {
    /// A full round: every current user, then a deltaLink for the changes after it.
    Initial,
    /// No users, only a deltaLink from now on (`$deltatoken=latest`).
    Latest,
    /// The deltaLink stored after the previous round, followed verbatim.
    Link(String),
}

/// Why a user left the directory in a delta round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemovedReason {
    /// Soft-deleted: in the deleted items for 30 days and restorable (`"changed"`).
    Changed,
    /// Permanently deleted (`"deleted"`).
    Deleted,
}

/// A user a delta round reports as removed (`@removed`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemovedUser {
    /// Object id.
    pub id: String,
    /// Soft or hard deletion.
    pub reason: RemovedReason,
}

/// One page of a delta round.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeltaPage {
    /// Users created, changed or restored (their current state), or all users in an initial
    /// round.
    pub users: Vec<GraphUser>,
    /// Users deleted since the last round.
    pub removed: Vec<RemovedUser>,
    /// Entries that were not usable, each with the reason.
    pub rejected: Vec<RejectedUser>,
    /// Set on the last page of the round: store it and start the next round from it.
    pub delta_link: Option<String>,
}

enum DeltaEntry {
    User(GraphUser),
    Removed(RemovedUser),
    Rejected(RejectedUser),
}

fn delta_entry(raw: &RawValue) -> DeltaEntry {
    let entry = match entry_value(raw) {
        Ok(entry) => entry,
        Err(rejected) => return DeltaEntry::Rejected(rejected),
    };
    let Some(removed) = entry.get("@removed") else {
        return match GraphUser::try_from(entry) {
            Ok(user) => DeltaEntry::User(user),
            Err(rejected) => DeltaEntry::Rejected(rejected),
        };
    };
    let id = entry.get("id").and_then(Value::as_str).map(str::to_owned);
    let reject = |reason: String| {
        DeltaEntry::Rejected(RejectedUser {
            id: id.clone(),
            reason,
        })
    };
    let reason = match removed.get("reason").and_then(Value::as_str) {
        Some(r) if r.eq_ignore_ascii_case("changed") => RemovedReason::Changed,
        Some(r) if r.eq_ignore_ascii_case("deleted") => RemovedReason::Deleted,
        other => return reject(format!("unknown @removed reason {other:?}")),
    };
    match id.as_deref().map(str::trim) {
        Some(trimmed) if !trimmed.is_empty() => DeltaEntry::Removed(RemovedUser {
            id: id.clone().unwrap_or_default(),
            reason,
        }),
        _ => reject("@removed entry without an id".to_owned()),
    }
}

/// The pages of one delta round, fetched by [`DeltaPages::next_page`].
///
/// Graph may replay entries and repeat one within a round; applying a page must be
/// idempotent (an upsert by id, a removal of an absent user is no change). Store the
/// deltaLink only after every page of the round was applied.
#[derive(Debug)]
pub struct DeltaPages {
    client: GraphClient,
    next: Result<Option<Url>, String>,
}

impl GraphClient {
    /// Starts a delta round over users.
    ///
    /// [`DeltaStart::Initial`] asks `GET /v1.0/users/delta?$select=USER_SELECT` (the selection
    /// is then carried by Graph's links), [`DeltaStart::Latest`] adds `$deltatoken=latest`,
    /// and [`DeltaStart::Link`] follows a stored deltaLink as it is, on the Graph host only.
    /// When Graph no longer knows the token, [`DeltaPages::next_page`] fails with
    /// [`Error::SyncReset`]: start again from [`DeltaStart::Initial`].
    pub fn users_delta(&self, start: DeltaStart) -> DeltaPages {
        let next = match start {
            DeltaStart::Initial => self
                .graph_url(&format!("/v1.0/users/delta?$select={USER_SELECT}"))
                .map_err(|e| e.to_string()),
            DeltaStart::Latest => self
                .graph_url(&format!(
                    "/v1.0/users/delta?$select={USER_SELECT}&$deltatoken=latest"
                ))
                .map_err(|e| e.to_string()),
            DeltaStart::Link(link) => self
                .check_link(&link, "stored deltaLink")
                .map_err(|e| e.to_string()),
        };
        DeltaPages {
            client: self.clone(),
            next: next.map(Some),
        }
    }
}

impl DeltaPages {
    /// Fetches the next page of the round, or `None` after the page carrying the deltaLink.
    ///
    /// Pages may be empty; keep calling until `None`. After an error the position is
    /// unchanged, so calling again retries that page.
    pub async fn next_page(&mut self) -> Result<Option<DeltaPage>, Error> {
        let url = match &self.next {
            Ok(None) => return Ok(None),
            Ok(Some(url)) => url,
            Err(message) => return Err(Error::InvalidConfig(message.clone())),
        };
        let parsed = self
            .client
            .call(Call::get(url), |body| {
                let parsed = parse_page(body, "delta", delta_entry)?;
                if parsed.next_link.is_none() && parsed.delta_link.is_none() {
                    return Err(Error::Decode(
                        "delta page has neither @odata.nextLink nor @odata.deltaLink".to_owned(),
                    ));
                }
                Ok(parsed)
            })
            .await?;
        let mut page = DeltaPage::default();
        let next = match (parsed.next_link, parsed.delta_link) {
            (Some(link), _) => Some(self.client.check_next_link(&link, url)?),
            (None, Some(link)) => {
                self.client.check_link(&link, "@odata.deltaLink")?;
                page.delta_link = Some(link);
                None
            }
            (None, None) => None,
        };
        for entry in parsed.entries {
            match entry {
                DeltaEntry::User(user) => page.users.push(user),
                DeltaEntry::Removed(removed) => page.removed.push(removed),
                DeltaEntry::Rejected(rejected) => page.rejected.push(rejected),
            }
        }
        if !page.rejected.is_empty() {
            metrics::counter!(names::REJECTED, "kind" => "delta")
                .increment(page.rejected.len() as u64);
        }
        self.next = Ok(next);
        Ok(Some(page))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(body: &str) -> Vec<DeltaEntry> {
        parse_page(body.as_bytes(), "delta", delta_entry)
            .unwrap()
            .entries
    }

    #[test]
    fn removed_entries_carry_their_reason_and_bad_ones_are_rejected() {
        let parsed = entries(
            r#"{"value":[
                {"id":"a","@removed":{"reason":"changed"}},
                {"id":"b","@removed":{"reason":"deleted"}},
                {"id":"c","@removed":{"reason":"vanished"}},
                {"@removed":{"reason":"deleted"}},
                {"id":"d","userPrincipalName":"d@contoso.com"}
            ]}"#,
        );
        assert!(
            matches!(&parsed[0], DeltaEntry::Removed(r) if r.id == "a" && r.reason == RemovedReason::Changed)
        );
        assert!(
            matches!(&parsed[1], DeltaEntry::Removed(r) if r.id == "b" && r.reason == RemovedReason::Deleted)
        );
        assert!(matches!(&parsed[2], DeltaEntry::Rejected(r) if r.id.as_deref() == Some("c")));
        assert!(matches!(&parsed[3], DeltaEntry::Rejected(r) if r.id.is_none()));
        assert!(matches!(&parsed[4], DeltaEntry::User(u) if u.id == "d"));
    }
}
