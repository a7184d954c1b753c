//! `GET /v1.0/users/delta`: rounds of pages ending in a deltaLink, served from the change log.

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use crate::directory::Life;
use crate::graph_error::{GraphError, RequestIds};
use crate::state::AppState;
use crate::synthetic::splitmix64;
use crate::users::{Query, SelectedUser, Selection, internal, json_response, origin};

/// The position in a delta round, carried by `$skiptoken`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RoundToken {
    epoch: u64,
    /// 0: the initial round (offset is a slot), 1: a change round (offset into the changes).
    kind: u64,
    from: u64,
    upto: u64,
    offset: u64,
    mask: u64,
}

/// The state after a round, carried by `$deltatoken`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DeltaToken {
    epoch: u64,
    seq: u64,
    mask: u64,
}

fn seal(fields: &[u64]) -> String {
    let check = fields
        .iter()
        .fold(0x0DE1_7A70_C0DE_u64, |h, f| splitmix64(h ^ *f));
    let text: Vec<String> = fields
        .iter()
        .chain(std::iter::once(&check))
        .map(u64::to_string)
        .collect();
    URL_SAFE_NO_PAD.encode(text.join("."))
}

fn open(token: &str, n: usize) -> Option<Vec<u64>> {
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(token).ok()?).ok()?;
    let mut numbers: Vec<u64> = text
        .split('.')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let check = numbers.pop()?;
    (numbers.len() == n && seal(&numbers) == token && check != 0).then_some(numbers)
}

impl RoundToken {
    fn encode(self) -> String {
        seal(&[
            1,
            self.epoch,
            self.kind,
            self.from,
            self.upto,
            self.offset,
            self.mask,
        ])
    }

    fn decode(token: &str) -> Option<Self> {
        match open(token, 7)?.as_slice() {
            [1, epoch, kind, from, upto, offset, mask] => Some(Self {
                epoch: *epoch,
                kind: *kind,
                from: *from,
                upto: *upto,
                offset: *offset,
                mask: *mask,
            }),
            _ => None,
        }
    }
}

impl DeltaToken {
    fn encode(self) -> String {
        seal(&[2, self.epoch, self.seq, self.mask])
    }

    fn decode(token: &str) -> Option<Self> {
        match open(token, 4)?.as_slice() {
            [2, epoch, seq, mask] => Some(Self {
                epoch: *epoch,
                seq: *seq,
                mask: *mask,
            }),
            _ => None,
        }
    }
}

/// 410 Gone with Graph's body and a `Location` to start over from.
fn gone(origin: &str, mask: u64, ids: &RequestIds) -> Response {
    let mut response = GraphError::new(
        StatusCode::GONE,
        "syncStateNotFound",
        "The sync state generation is not found. Please restart your sync with a fresh delta request.",
        ids,
    )
    .into_response();
    let mut location = format!("{origin}/v1.0/users/delta?");
    if let Some(select) = Selection::from_mask(mask as u32).echo() {
        location.push_str(&format!("$select={select}&"));
    }
    location.push_str("$deltatoken=");
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

fn bad_token(ids: &RequestIds) -> Response {
    GraphError::bad_request("The delta or skip token is not valid.", ids).into_response()
}

pub(crate) async fn users_delta(
    State(state): State<AppState>,
    Extension(ids): Extension<RequestIds>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, Response> {
    let query = Query::parse(&uri, &["$select", "$deltatoken", "$skiptoken"], &ids)
        .map_err(IntoResponse::into_response)?;
    let origin = origin(&state, &headers);
    let epoch = state.delta_epoch();
    let directory = state.directory();
    let round = match (&query.raw_skiptoken, &query.deltatoken) {
        (Some(skiptoken), _) => {
            let round = RoundToken::decode(skiptoken).ok_or_else(|| bad_token(&ids))?;
            if round.epoch != epoch {
                return Err(gone(&origin, round.mask, &ids));
            }
            round
        }
        (None, Some(token)) if token.eq_ignore_ascii_case("latest") => {
            let link = DeltaToken {
                epoch,
                seq: directory.seq(),
                mask: u64::from(query.select.mask()),
            };
            let body = json!({
                "@odata.context": format!("{origin}/v1.0/$metadata#users"),
                "@odata.deltaLink": format!("{origin}/v1.0/users/delta?$deltatoken={}", link.encode()),
                "value": [],
            });
            return Ok(json_response(body.to_string().into_bytes()));
        }
        (None, Some(token)) => {
            let token = DeltaToken::decode(token).ok_or_else(|| bad_token(&ids))?;
            if token.epoch != epoch {
                return Err(gone(&origin, token.mask, &ids));
            }
            RoundToken {
                epoch,
                kind: 1,
                from: token.seq,
                upto: directory.seq(),
                offset: 0,
                mask: token.mask,
            }
        }
        (None, None) => RoundToken {
            epoch,
            kind: 0,
            from: 0,
            upto: directory.seq(),
            offset: 0,
            mask: u64::from(query.select.mask()),
        },
    };
    let selection = Selection::from_mask(round.mask as u32);
    let properties = selection.properties();
    let page_size = state.delta_page_size.max(1);
    let slots = directory.slots();
    let mut value: Vec<Value> = Vec::with_capacity(page_size);
    let user_json = |slot: usize| -> Result<Value, GraphError> {
        serde_json::to_value(SelectedUser {
            user: &slots[slot].user,
            properties,
            typed: false,
        })
        .map_err(|e| internal(e, &ids))
    };
    let next_offset;
    let more;
    if round.kind == 0 {
        let mut position = (round.offset as usize).min(slots.len());
        while position < slots.len() && value.len() < page_size {
            if slots[position].life == Life::Active {
                value.push(user_json(position).map_err(IntoResponse::into_response)?);
            }
            position += 1;
        }
        next_offset = position as u64;
        more = position < slots.len();
    } else {
        let changed = directory.changed_since(round.from, round.upto);
        let start = (round.offset as usize).min(changed.len());
        let end = (start + page_size).min(changed.len());
        for slot in &changed[start..end] {
            let entry = match slots[*slot].life {
                Life::Active => user_json(*slot).map_err(IntoResponse::into_response)?,
                Life::SoftDeleted => {
                    json!({"id": slots[*slot].user.id, "@removed": {"reason": "changed"}})
                }
                Life::HardDeleted => {
                    json!({"id": slots[*slot].user.id, "@removed": {"reason": "deleted"}})
                }
            };
            value.push(entry);
        }
        next_offset = end as u64;
        more = end < changed.len();
    }
    drop(directory);
    if state.duplicate_delta_entries
        && let Some(first) = value.first().cloned()
    {
        value.push(first);
    }
    let mut body = serde_json::Map::new();
    body.insert(
        "@odata.context".to_owned(),
        selection.context(&origin, "").into(),
    );
    if more {
        let next = RoundToken {
            offset: next_offset,
            ..round
        };
        body.insert(
            "@odata.nextLink".to_owned(),
            format!("{origin}/v1.0/users/delta?$skiptoken={}", next.encode()).into(),
        );
    } else {
        let token = DeltaToken {
            epoch,
            seq: round.upto,
            mask: round.mask,
        };
        body.insert(
            "@odata.deltaLink".to_owned(),
            format!("{origin}/v1.0/users/delta?$deltatoken={}", token.encode()).into(),
        );
    }
    body.insert("value".to_owned(), Value::Array(value));
    let body = serde_json::to_vec(&body).map_err(|e| internal(e, &ids).into_response())?;
    Ok(json_response(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_refuse_tampering() {
        let round = RoundToken {
            epoch: 3,
            kind: 1,
            from: 10,
            upto: 20,
            offset: 400,
            mask: 0b1011,
        };
        assert_eq!(RoundToken::decode(&round.encode()), Some(round));
        let token = DeltaToken {
            epoch: 0,
            seq: 7,
            mask: 0,
        };
        assert_eq!(DeltaToken::decode(&token.encode()), Some(token));
        assert_eq!(RoundToken::decode(&token.encode()), None);
        let forged = URL_SAFE_NO_PAD.encode("2.0.99.0.1234");
        assert_eq!(DeltaToken::decode(&forged), None);
        assert_eq!(DeltaToken::decode("latest"), None);
    }
}
