//! `GET /v1.0/directory/deletedItems/microsoft.graph.user`: the soft-deleted users, restorable
//! until they are purged (hard-deleted). Paged like `/users` (100 by default, `$top` up to 999,
//! `@odata.nextLink` with an opaque `$skiptoken`).

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use serde::Serialize;

use crate::directory::Life;
use crate::graph_error::{GraphError, RequestIds};
use crate::state::AppState;
use crate::users::{Query, SelectedUser, encode_skiptoken, internal, json_response, origin};

#[derive(Serialize)]
struct Page<'a> {
    #[serde(rename = "@odata.context")]
    context: String,
    #[serde(rename = "@odata.nextLink", skip_serializing_if = "Option::is_none")]
    next_link: Option<String>,
    value: Vec<SelectedUser<'a>>,
}

pub(crate) async fn list_deleted_users(
    State(state): State<AppState>,
    Extension(ids): Extension<RequestIds>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, GraphError> {
    let query = Query::parse(&uri, &["$select", "$top", "$skiptoken"], &ids)?;
    let page_size = query.top.unwrap_or(100);
    let origin = origin(&state, &headers);
    let directory = state.directory();
    let slots = directory.slots();
    let start = query.skip.min(slots.len());
    let mut value = Vec::with_capacity(page_size.min(1_000));
    let mut end = start;
    while end < slots.len() && value.len() < page_size {
        let slot = &slots[end];
        end += 1;
        if slot.life == Life::SoftDeleted {
            value.push(SelectedUser {
                user: &slot.user,
                properties: query.select.properties(),
                typed: true,
            });
        }
    }
    // Like Graph, a link is offered while slots remain, even if none of them is deleted.
    let next_link = (end < slots.len()).then(|| {
        let mut link = format!("{origin}/v1.0/directory/deletedItems/microsoft.graph.user?");
        if let Some(select) = query.select.echo() {
            link.push_str(&format!("$select={select}&"));
        }
        if let Some(top) = query.top {
            link.push_str(&format!("$top={top}&"));
        }
        let token = encode_skiptoken(end).replace('\'', "%27");
        link.push_str(&format!("$skiptoken={token}"));
        link
    });
    let page = Page {
        context: format!("{origin}/v1.0/$metadata#directoryObjects/microsoft.graph.user"),
        next_link,
        value,
    };
    let body = serde_json::to_vec(&page).map_err(|e| internal(e, &ids))?;
    drop(directory);
    Ok(json_response(body))
}
