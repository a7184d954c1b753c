//! Changes to the emulated tenant over HTTP, as an administrator makes them in the Entra
//! admin center: add, rename, enable/disable, soft-delete, restore and purge users, and move
//! them in and out of groups. `userimport dev tenant …` calls these, so the rest of the
//! product (updates, disables, safety halts, restores) can be tried against `dev`.
//!
//! Not Graph: the routes live under `/_emulator/` and take no token (the emulator listens on
//! loopback for a developer). Users are named by object id or userPrincipalName.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;

use crate::directory::{MemberObject, UserUpdate};
use crate::groups::GroupMember;
use crate::state::AppState;
use crate::synthetic::EmulatedUser;

type Answer = Result<Json<serde_json::Value>, (StatusCode, String)>;

fn refused(error: anyhow::Error) -> (StatusCode, String) {
    (StatusCode::BAD_REQUEST, format!("{error:#}"))
}

fn not_found(key: &str) -> (StatusCode, String) {
    (
        StatusCode::NOT_FOUND,
        format!("no user {key:?} in the tenant"),
    )
}

/// A user to add.
#[derive(Debug, Deserialize)]
pub(crate) struct NewUser {
    user_principal_name: String,
    display_name: String,
    #[serde(default)]
    mail: Option<String>,
    #[serde(default)]
    guest: bool,
    #[serde(default = "enabled")]
    account_enabled: bool,
}

fn enabled() -> bool {
    true
}

pub(crate) async fn create_user(State(state): State<AppState>, Json(new): Json<NewUser>) -> Answer {
    let id = uuid::Uuid::new_v4().to_string();
    let user = EmulatedUser {
        id: id.clone(),
        user_principal_name: new.user_principal_name,
        mail: new.mail,
        display_name: new.display_name,
        given_name: None,
        surname: None,
        account_enabled: new.account_enabled,
        user_type: if new.guest { "Guest" } else { "Member" }.to_owned(),
    };
    state.directory_mut().create(user).map_err(refused)?;
    Ok(Json(serde_json::json!({ "id": id })))
}

/// Properties to change.
#[derive(Debug, Deserialize)]
pub(crate) struct UserPatch {
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    user_principal_name: Option<String>,
    #[serde(default)]
    mail: Option<String>,
    #[serde(default)]
    account_enabled: Option<bool>,
}

pub(crate) async fn update_user(
    State(state): State<AppState>,
    Path(key): Path<String>,
    Json(patch): Json<UserPatch>,
) -> Answer {
    let id = object_id(&state, &key)?;
    let update = UserUpdate {
        display_name: patch.display_name,
        user_principal_name: patch.user_principal_name,
        mail: patch.mail.map(Some),
        account_enabled: patch.account_enabled,
        ..UserUpdate::default()
    };
    state.directory_mut().update(&id, update).map_err(refused)?;
    Ok(Json(serde_json::json!({ "id": id })))
}

/// What to change on every member of a group.
#[derive(Debug, Deserialize)]
pub(crate) struct MembersPatch {
    account_enabled: bool,
}

/// Enables or disables every user in a group (its transitive members), as one mistaken HR
/// bulk edit would: the way to see a round's safety halt in `dev`.
pub(crate) async fn update_group_members(
    State(state): State<AppState>,
    Path(group): Path<String>,
    Json(patch): Json<MembersPatch>,
) -> Answer {
    let mut directory = state.directory_mut();
    if directory.group(&group).is_none() {
        return Err((
            StatusCode::NOT_FOUND,
            format!("no group {group:?} in the tenant"),
        ));
    }
    let ids: Vec<String> = directory
        .transitive_members(&group)
        .into_iter()
        .filter_map(|member| match member {
            MemberObject::User(user) => Some(user.id.clone()),
            MemberObject::Other { .. } => None,
        })
        .collect();
    for id in &ids {
        let update = UserUpdate {
            account_enabled: Some(patch.account_enabled),
            ..UserUpdate::default()
        };
        directory.update(id, update).map_err(refused)?;
    }
    Ok(Json(serde_json::json!({ "users": ids.len() })))
}

/// `delete` (soft: restorable), `restore` or `purge` (hard).
pub(crate) async fn user_life(
    State(state): State<AppState>,
    Path((key, action)): Path<(String, String)>,
) -> Answer {
    let id = object_id(&state, &key)?;
    let mut directory = state.directory_mut();
    match action.as_str() {
        "delete" => directory.soft_delete(&id),
        "restore" => directory.restore(&id),
        "purge" => directory.hard_delete(&id),
        other => {
            return Err((
                StatusCode::NOT_FOUND,
                format!("{other:?} is not delete, restore or purge"),
            ));
        }
    }
    .map_err(refused)?;
    Ok(Json(serde_json::json!({ "id": id })))
}

/// Adds (`PUT`) a user to a group as a direct member (once, however often it is asked).
pub(crate) async fn join_group(
    State(state): State<AppState>,
    Path((group, key)): Path<(String, String)>,
) -> Answer {
    let id = object_id(&state, &key)?;
    let mut directory = state.directory_mut();
    let no_group = |e: anyhow::Error| (StatusCode::NOT_FOUND, format!("{e:#}"));
    directory
        .remove_group_member(&group, &id)
        .map_err(no_group)?;
    directory
        .add_group_member(&group, GroupMember::User(id.clone()))
        .map_err(no_group)?;
    Ok(Json(serde_json::json!({ "id": id })))
}

/// Removes (`DELETE`) a user from a group's direct members.
pub(crate) async fn leave_group(
    State(state): State<AppState>,
    Path((group, key)): Path<(String, String)>,
) -> Answer {
    let id = object_id(&state, &key)?;
    state
        .directory_mut()
        .remove_group_member(&group, &id)
        .map_err(|e| (StatusCode::NOT_FOUND, format!("{e:#}")))?;
    Ok(Json(serde_json::json!({ "id": id })))
}

/// The object id of the user `key` names (active or soft-deleted).
fn object_id(state: &AppState, key: &str) -> Result<String, (StatusCode, String)> {
    state
        .directory()
        .object_id_of(key)
        .ok_or_else(|| not_found(key))
}
