//! Groups: `GET /v1.0/groups/{id}` and `GET /v1.0/groups/{id}/transitiveMembers`.

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use serde_json::{Map, Value};

use crate::directory::MemberObject;
use crate::graph_error::{GraphError, RequestIds};
use crate::state::AppState;
use crate::synthetic::{EmulatedUser, splitmix64};
use crate::users::{Query, SelectedUser, encode_skiptoken, internal, json_response, origin};

/// A group of the emulated tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmulatedGroup {
    /// Object id.
    pub id: String,
    /// `displayName`.
    pub display_name: String,
    /// Direct members, in order.
    pub members: Vec<GroupMember>,
}

/// A direct member of a group: a user or group of the tenant (by id), or another kind of
/// directory object, which only exists as a member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupMember {
    /// A user of the tenant, by object id.
    User(String),
    /// A group of the tenant, by object id (nested; its members count transitively).
    Group(String),
    /// A device (`#microsoft.graph.device`).
    Device {
        /// Object id.
        id: String,
        /// `displayName`.
        display_name: String,
    },
    /// An organizational contact (`#microsoft.graph.orgContact`).
    Contact {
        /// Object id.
        id: String,
        /// `displayName`.
        display_name: String,
    },
    /// A service principal (`#microsoft.graph.servicePrincipal`).
    ServicePrincipal {
        /// Object id.
        id: String,
        /// `displayName`.
        display_name: String,
    },
}

impl GroupMember {
    /// The member's object id.
    pub fn id(&self) -> &str {
        match self {
            Self::User(id) | Self::Group(id) => id,
            Self::Device { id, .. }
            | Self::Contact { id, .. }
            | Self::ServicePrincipal { id, .. } => id,
        }
    }

    /// (`@odata.type`, id, displayName) of a member that is neither a user nor a group.
    pub(crate) fn describe(&self) -> (&'static str, &str, &str) {
        match self {
            Self::Device { id, display_name } => ("#microsoft.graph.device", id, display_name),
            Self::Contact { id, display_name } => ("#microsoft.graph.orgContact", id, display_name),
            Self::ServicePrincipal { id, display_name } => {
                ("#microsoft.graph.servicePrincipal", id, display_name)
            }
            Self::User(id) => ("#microsoft.graph.user", id, ""),
            Self::Group(id) => ("#microsoft.graph.group", id, ""),
        }
    }
}

/// Deterministic groups over `users` (which should come from
/// [`synthetic_users`](crate::synthetic_users)):
///
/// - "All Staff": every user whose index is even;
/// - "Engineering": users 0–9 directly, the nested group "Platform", a device, an
///   organizational contact and a service principal;
/// - "Platform": users 5–14 (5–9 overlap with Engineering's direct members, so they must be
///   listed once) and, back up, "Engineering" itself (a cycle, as tenants can have);
/// - "Empty": no members.
///
/// Fewer users give smaller groups. Group ids are fixed GUIDs.
pub fn synthetic_groups(users: &[EmulatedUser]) -> Vec<EmulatedGroup> {
    let ids = |range: std::ops::Range<usize>| -> Vec<GroupMember> {
        users
            .get(range.start.min(users.len())..range.end.min(users.len()))
            .unwrap_or_default()
            .iter()
            .map(|u| GroupMember::User(u.id.clone()))
            .collect()
    };
    let mut engineering = ids(0..10);
    engineering.extend([
        GroupMember::Group(SYNTHETIC_GROUP_IDS[2].to_owned()),
        GroupMember::Device {
            id: guid(0xDE71CE),
            display_name: "Build Agent 01".to_owned(),
        },
        GroupMember::Contact {
            id: guid(0xC0471C7),
            display_name: "Vendor Support".to_owned(),
        },
        GroupMember::ServicePrincipal {
            id: guid(0x5E2F1CE),
            display_name: "CI Pipeline".to_owned(),
        },
    ]);
    let mut platform = ids(5..15);
    platform.push(GroupMember::Group(SYNTHETIC_GROUP_IDS[1].to_owned()));
    vec![
        EmulatedGroup {
            id: SYNTHETIC_GROUP_IDS[0].to_owned(),
            display_name: "All Staff".to_owned(),
            members: users
                .iter()
                .step_by(2)
                .map(|u| GroupMember::User(u.id.clone()))
                .collect(),
        },
        EmulatedGroup {
            id: SYNTHETIC_GROUP_IDS[1].to_owned(),
            display_name: "Engineering".to_owned(),
            members: engineering,
        },
        EmulatedGroup {
            id: SYNTHETIC_GROUP_IDS[2].to_owned(),
            display_name: "Platform".to_owned(),
            members: platform,
        },
        EmulatedGroup {
            id: SYNTHETIC_GROUP_IDS[3].to_owned(),
            display_name: "Empty".to_owned(),
            members: Vec::new(),
        },
    ]
}

/// Ids of [`synthetic_groups`]: All Staff, Engineering, Platform, Empty.
pub const SYNTHETIC_GROUP_IDS: [&str; 4] = [
    "a11574ff-0000-4000-8000-000000000001",
    "e4614ee4-0000-4000-8000-000000000002",
    "9147f0a3-0000-4000-8000-000000000003",
    "e3974000-0000-4000-8000-000000000004",
];

fn guid(seed: u64) -> String {
    let h = splitmix64(seed);
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        h >> 32,
        (h >> 16) & 0xFFFF,
        h & 0xFFF,
        (h >> 20) & 0xFFF,
        splitmix64(h) & 0xFFFF_FFFF_FFFF
    )
}

fn not_found(id: &str, ids: &RequestIds) -> GraphError {
    GraphError::new(
        StatusCode::NOT_FOUND,
        "Request_ResourceNotFound",
        format!(
            "Resource '{id}' does not exist or one of its queried reference-property objects are not present."
        ),
        ids,
    )
}

pub(crate) async fn get_group(
    State(state): State<AppState>,
    Extension(ids): Extension<RequestIds>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, GraphError> {
    let origin = origin(&state, &headers);
    let directory = state.directory();
    let group = directory.group(&id).ok_or_else(|| not_found(&id, &ids))?;
    let body = serde_json::json!({
        "@odata.context": format!("{origin}/v1.0/$metadata#groups/$entity"),
        "id": group.id,
        "displayName": group.display_name,
        "groupTypes": [],
        "securityEnabled": true,
        "mailEnabled": false,
    });
    Ok(json_response(body.to_string().into_bytes()))
}

pub(crate) async fn transitive_members(
    State(state): State<AppState>,
    Extension(ids): Extension<RequestIds>,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, GraphError> {
    let query = Query::parse(&uri, &["$select", "$top", "$skiptoken"], &ids)?;
    let origin = origin(&state, &headers);
    let directory = state.directory();
    if directory.group(&id).is_none() {
        return Err(not_found(&id, &ids));
    }
    let members = directory.transitive_members(&id);
    let page_size = query.top.unwrap_or(100);
    let start = query.skip.min(members.len());
    let end = (start + page_size).min(members.len());
    let selected_name = query
        .select
        .properties()
        .iter()
        .any(|p| p.name() == "displayName");
    let mut value = Vec::with_capacity(end - start);
    for member in &members[start..end] {
        let entry = match member {
            MemberObject::User(user) => serde_json::to_value(SelectedUser {
                user,
                properties: query.select.properties(),
                typed: true,
            })
            .map_err(|e| internal(e, &ids))?,
            MemberObject::Other {
                odata_type,
                id,
                display_name,
            } => {
                let mut object = Map::new();
                object.insert("@odata.type".to_owned(), (*odata_type).into());
                object.insert("id".to_owned(), (*id).into());
                if selected_name {
                    object.insert("displayName".to_owned(), (*display_name).into());
                }
                Value::Object(object)
            }
        };
        value.push(entry);
    }
    let mut body = Map::new();
    body.insert(
        "@odata.context".to_owned(),
        format!("{origin}/v1.0/$metadata#directoryObjects").into(),
    );
    if end < members.len() {
        let mut link = format!("{origin}/v1.0/groups/{id}/transitiveMembers?");
        if let Some(select) = query.select.echo() {
            link.push_str(&format!("$select={select}&"));
        }
        if let Some(top) = query.top {
            link.push_str(&format!("$top={top}&"));
        }
        link.push_str(&format!(
            "$skiptoken={}",
            encode_skiptoken(end).replace('\'', "%27")
        ));
        body.insert("@odata.nextLink".to_owned(), link.into());
    }
    body.insert("value".to_owned(), Value::Array(value));
    drop(directory);
    let body = serde_json::to_vec(&body).map_err(|e| internal(e, &ids))?;
    Ok(json_response(body))
}
