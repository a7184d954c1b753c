//! `GET /v1.0/users` and `GET /v1.0/users/{id | userPrincipalName}`.

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};

use crate::directory::Life;
use crate::graph_error::{GraphError, RequestIds};
use crate::state::AppState;
use crate::synthetic::{EmulatedUser, splitmix64};

/// A user property the emulator can return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Property {
    BusinessPhones,
    DisplayName,
    GivenName,
    Id,
    JobTitle,
    Mail,
    MobilePhone,
    OfficeLocation,
    PreferredLanguage,
    Surname,
    UserPrincipalName,
    AccountEnabled,
    UserType,
}

pub(crate) const ALL_PROPERTIES: [Property; 13] = [
    Property::BusinessPhones,
    Property::DisplayName,
    Property::GivenName,
    Property::Id,
    Property::JobTitle,
    Property::Mail,
    Property::MobilePhone,
    Property::OfficeLocation,
    Property::PreferredLanguage,
    Property::Surname,
    Property::UserPrincipalName,
    Property::AccountEnabled,
    Property::UserType,
];

/// Graph's default property set for users; the others are "returned only on `$select`".
const DEFAULT_PROPERTIES: [Property; 11] = [
    Property::BusinessPhones,
    Property::DisplayName,
    Property::GivenName,
    Property::Id,
    Property::JobTitle,
    Property::Mail,
    Property::MobilePhone,
    Property::OfficeLocation,
    Property::PreferredLanguage,
    Property::Surname,
    Property::UserPrincipalName,
];

impl Property {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::BusinessPhones => "businessPhones",
            Self::DisplayName => "displayName",
            Self::GivenName => "givenName",
            Self::Id => "id",
            Self::JobTitle => "jobTitle",
            Self::Mail => "mail",
            Self::MobilePhone => "mobilePhone",
            Self::OfficeLocation => "officeLocation",
            Self::PreferredLanguage => "preferredLanguage",
            Self::Surname => "surname",
            Self::UserPrincipalName => "userPrincipalName",
            Self::AccountEnabled => "accountEnabled",
            Self::UserType => "userType",
        }
    }

    pub(crate) fn parse(name: &str) -> Option<Self> {
        ALL_PROPERTIES
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(name))
    }

    fn serialize_value<M: SerializeMap>(
        self,
        user: &EmulatedUser,
        map: &mut M,
    ) -> Result<(), M::Error> {
        let key = self.name();
        match self {
            Self::BusinessPhones => map.serialize_entry(key, &[] as &[&str]),
            Self::DisplayName => map.serialize_entry(key, &user.display_name),
            Self::GivenName => map.serialize_entry(key, &user.given_name),
            Self::Id => map.serialize_entry(key, &user.id),
            Self::JobTitle | Self::MobilePhone | Self::OfficeLocation | Self::PreferredLanguage => {
                map.serialize_entry(key, &None::<&str>)
            }
            Self::Mail => map.serialize_entry(key, &user.mail),
            Self::Surname => map.serialize_entry(key, &user.surname),
            Self::UserPrincipalName => map.serialize_entry(key, &user.user_principal_name),
            Self::AccountEnabled => map.serialize_entry(key, &user.account_enabled),
            Self::UserType => map.serialize_entry(key, &user.user_type),
        }
    }
}

/// The `$select` of a request: `None` means the default property set.
#[derive(Debug, Clone, Default)]
pub(crate) struct Selection(Option<Vec<Property>>);

impl Selection {
    pub(crate) fn parse(raw: &str, ids: &RequestIds) -> Result<Self, GraphError> {
        let mut properties = vec![Property::Id];
        for name in raw.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let property = Property::parse(name).ok_or_else(|| {
                GraphError::bad_request(
                    format!(
                        "Could not find a property named '{name}' on type 'microsoft.graph.user'."
                    ),
                    ids,
                )
            })?;
            if !properties.contains(&property) {
                properties.push(property);
            }
        }
        Ok(Self(Some(properties)))
    }

    /// The selection as a bit set over [`ALL_PROPERTIES`]; 0 is the default set.
    pub(crate) fn mask(&self) -> u32 {
        self.0.as_ref().map_or(0, |properties| {
            ALL_PROPERTIES
                .iter()
                .enumerate()
                .filter(|(_, p)| properties.contains(p))
                .fold(0, |mask, (i, _)| mask | (1 << i))
        })
    }

    pub(crate) fn from_mask(mask: u32) -> Self {
        if mask == 0 {
            return Self(None);
        }
        Self(Some(
            ALL_PROPERTIES
                .iter()
                .enumerate()
                .filter(|(i, _)| mask & (1 << i) != 0)
                .map(|(_, p)| *p)
                .collect(),
        ))
    }

    pub(crate) fn properties(&self) -> &[Property] {
        self.0.as_deref().unwrap_or(&DEFAULT_PROPERTIES)
    }

    /// `$select` as echoed in `@odata.context` and `@odata.nextLink`, without the implicit `id`.
    pub(crate) fn echo(&self) -> Option<String> {
        let properties = self.0.as_ref()?;
        let names: Vec<&str> = properties
            .iter()
            .filter(|p| **p != Property::Id)
            .map(|p| p.name())
            .collect();
        Some(if names.is_empty() {
            "id".to_owned()
        } else {
            names.join(",")
        })
    }

    pub(crate) fn context(&self, origin: &str, suffix: &str) -> String {
        match self.echo() {
            Some(select) => format!("{origin}/v1.0/$metadata#users({select}){suffix}"),
            None => format!("{origin}/v1.0/$metadata#users{suffix}"),
        }
    }
}

pub(crate) struct SelectedUser<'a> {
    pub(crate) user: &'a EmulatedUser,
    pub(crate) properties: &'a [Property],
    /// Adds `"@odata.type": "#microsoft.graph.user"` (collections of directory objects).
    pub(crate) typed: bool,
}

impl Serialize for SelectedUser<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.properties.len() + 1))?;
        if self.typed {
            map.serialize_entry("@odata.type", "#microsoft.graph.user")?;
        }
        for property in self.properties {
            property.serialize_value(self.user, &mut map)?;
        }
        map.end()
    }
}

/// The query options of one request.
#[derive(Debug, Default)]
pub(crate) struct Query {
    pub(crate) select: Selection,
    pub(crate) top: Option<usize>,
    pub(crate) skip: usize,
    /// `$search`, without its quotes.
    pub(crate) search: Option<String>,
    pub(crate) count: bool,
    /// `$skiptoken` of a delta round, undecoded.
    pub(crate) raw_skiptoken: Option<String>,
    pub(crate) deltatoken: Option<String>,
}

impl Query {
    pub(crate) fn parse(uri: &Uri, allowed: &[&str], ids: &RequestIds) -> Result<Self, GraphError> {
        let mut query = Self::default();
        let mut seen: Vec<String> = Vec::new();
        let raw = uri.query().unwrap_or_default();
        for (key, value) in url::form_urlencoded::parse(raw.as_bytes()) {
            if !allowed.iter().any(|a| a.eq_ignore_ascii_case(&key)) {
                return Err(GraphError::bad_request(
                    format!("Query option '{key}' is not supported by the emulator."),
                    ids,
                ));
            }
            let key = key.to_ascii_lowercase();
            if seen.contains(&key) {
                return Err(GraphError::bad_request(
                    format!(
                        "Query option '{key}' was specified more than once, but it must be specified at most once."
                    ),
                    ids,
                ));
            }
            match key.as_str() {
                "$select" => query.select = Selection::parse(&value, ids)?,
                "$top" => query.top = Some(parse_top(&value, ids)?),
                "$search" => query.search = Some(value.trim().trim_matches('"').to_owned()),
                "$count" => query.count = value.eq_ignore_ascii_case("true"),
                "$deltatoken" => query.deltatoken = Some(value.into_owned()),
                "$skiptoken" if allowed.contains(&"$deltatoken") => {
                    query.raw_skiptoken = Some(value.into_owned());
                }
                "$skiptoken" => query.skip = decode_skiptoken(&value).ok_or_else(|| {
                    GraphError::new(
                        StatusCode::BAD_REQUEST,
                        "Directory_ExpiredPageToken",
                        "The specified page token value has expired and can no longer be included in your request.",
                        ids,
                    )
                })?,
                _ => {}
            }
            seen.push(key);
        }
        Ok(query)
    }
}

fn parse_top(raw: &str, ids: &RequestIds) -> Result<usize, GraphError> {
    match raw.parse::<usize>() {
        Ok(top) if (1..=999).contains(&top) => Ok(top),
        _ => Err(GraphError::new(
            StatusCode::BAD_REQUEST,
            "Request_UnsupportedQuery",
            format!("Invalid page size specified: '{raw}'. Must be between 1 and 999 inclusive."),
            ids,
        )),
    }
}

const SKIPTOKEN_KEY: u64 = 0x5EC7_E7A1_0F5E_7C0D;
const SKIPTOKEN_MULTIPLIER: u64 = 0x9E37_79B9_7F4A_7C15;
const SKIPTOKEN_MULTIPLIER_INVERSE: u64 = inverse_mod_2_64(SKIPTOKEN_MULTIPLIER);
const SKIPTOKEN_CHECK: u64 = 0xC4EC_4C4E_C4EC_4C4E;

/// The inverse of an odd number modulo 2^64 (Newton's iteration doubles the correct bits).
const fn inverse_mod_2_64(odd: u64) -> u64 {
    let mut inverse = odd;
    let mut round = 0;
    while round < 6 {
        inverse = inverse.wrapping_mul(2u64.wrapping_sub(odd.wrapping_mul(inverse)));
        round += 1;
    }
    inverse
}

/// An opaque page token in Graph's shape, `X'<hex>'`: the scrambled offset and a check value.
pub(crate) fn encode_skiptoken(offset: usize) -> String {
    let offset = offset as u64;
    let scrambled = offset.wrapping_mul(SKIPTOKEN_MULTIPLIER) ^ SKIPTOKEN_KEY;
    let check = splitmix64(offset ^ SKIPTOKEN_CHECK) as u32;
    format!("X'{scrambled:016X}{check:08X}'")
}

pub(crate) fn decode_skiptoken(token: &str) -> Option<usize> {
    let hex = token.strip_prefix("X'")?.strip_suffix('\'')?;
    if hex.len() != 24 || !hex.is_ascii() {
        return None;
    }
    let scrambled = u64::from_str_radix(&hex[..16], 16).ok()?;
    let offset = (scrambled ^ SKIPTOKEN_KEY).wrapping_mul(SKIPTOKEN_MULTIPLIER_INVERSE);
    let check = u32::from_str_radix(&hex[16..], 16).ok()?;
    (check == splitmix64(offset ^ SKIPTOKEN_CHECK) as u32).then_some(offset as usize)
}

/// The scheme and authority clients used to reach us, so absolute links work behind any name.
pub(crate) fn origin(state: &AppState, headers: &HeaderMap) -> String {
    headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .filter(|host| url::Url::parse(&format!("http://{host}")).is_ok_and(|u| u.path() == "/"))
        .map_or_else(
            || state.base_url.origin().ascii_serialization(),
            |host| format!("http://{host}"),
        )
}

pub(crate) fn json_response(body: Vec<u8>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8")],
        body,
    )
        .into_response()
}

#[derive(Serialize)]
struct Page<'a> {
    #[serde(rename = "@odata.context")]
    context: String,
    #[serde(rename = "@odata.count", skip_serializing_if = "Option::is_none")]
    count: Option<usize>,
    #[serde(rename = "@odata.nextLink", skip_serializing_if = "Option::is_none")]
    next_link: Option<String>,
    value: Vec<SelectedUser<'a>>,
}

/// Whether the request asked for eventual consistency.
pub(crate) fn eventual(headers: &HeaderMap) -> bool {
    headers
        .get("consistencylevel")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("eventual"))
}

/// `$search="property:term"`: users whose property has a word starting with `term`.
struct Search {
    property: Property,
    term: String,
}

impl Search {
    fn parse(raw: &str, ids: &RequestIds) -> Result<Self, GraphError> {
        let invalid = || {
            GraphError::new(
                StatusCode::BAD_REQUEST,
                "Request_UnsupportedQuery",
                format!(
                    "Unsupported or invalid query filter clause specified for $search: '{raw}'."
                ),
                ids,
            )
        };
        let (name, term) = raw.split_once(':').ok_or_else(invalid)?;
        let property = Property::parse(name.trim())
            .filter(|p| {
                matches!(
                    p,
                    Property::DisplayName
                        | Property::GivenName
                        | Property::Surname
                        | Property::Mail
                        | Property::UserPrincipalName
                )
            })
            .ok_or_else(invalid)?;
        Ok(Self {
            property,
            term: term.trim().to_lowercase(),
        })
    }

    fn matches(&self, user: &EmulatedUser) -> bool {
        let value = match self.property {
            Property::DisplayName => Some(user.display_name.as_str()),
            Property::GivenName => user.given_name.as_deref(),
            Property::Surname => user.surname.as_deref(),
            Property::Mail => user.mail.as_deref(),
            _ => Some(user.user_principal_name.as_str()),
        };
        value.is_some_and(|value| {
            value
                .to_lowercase()
                .split(|c: char| !c.is_alphanumeric())
                .any(|word| word.starts_with(&self.term))
        })
    }
}

pub(crate) async fn list_users(
    State(state): State<AppState>,
    Extension(ids): Extension<RequestIds>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, GraphError> {
    let query = Query::parse(
        &uri,
        &["$select", "$top", "$skiptoken", "$search", "$count"],
        &ids,
    )?;
    let eventual = eventual(&headers);
    let search = match &query.search {
        Some(_) if !eventual => {
            return Err(GraphError::new(
                StatusCode::BAD_REQUEST,
                "Request_UnsupportedQuery",
                "Request with $search query parameter only works through MSGraph with a special request header: 'ConsistencyLevel: eventual'",
                &ids,
            ));
        }
        Some(raw) => Some(Search::parse(raw, &ids)?),
        None => None,
    };
    let page_size = query.top.unwrap_or(100);
    let origin = origin(&state, &headers);
    let directory = state.directory();
    let slots = directory.slots();
    let wanted = |user: &EmulatedUser| search.as_ref().is_none_or(|s| s.matches(user));
    let start = query.skip.min(slots.len());
    let mut value = Vec::with_capacity(page_size.min(1_000));
    let mut end = start;
    while end < slots.len() && value.len() < page_size {
        let slot = &slots[end];
        end += 1;
        if slot.life == Life::Active && wanted(&slot.user) {
            value.push(SelectedUser {
                user: &slot.user,
                properties: query.select.properties(),
                typed: false,
            });
        }
    }
    let count = (query.count && eventual && query.skip == 0)
        .then(|| directory.active_users().filter(|user| wanted(user)).count());
    let next_link = (end < slots.len()).then(|| {
        let mut link = format!("{origin}/v1.0/users?");
        if let Some(select) = query.select.echo() {
            link.push_str(&format!("$select={select}&"));
        }
        if let Some(top) = query.top {
            link.push_str(&format!("$top={top}&"));
        }
        if let Some(raw) = &query.search {
            let quoted = format!("\"{raw}\"");
            let encoded: String = url::form_urlencoded::byte_serialize(quoted.as_bytes()).collect();
            link.push_str(&format!("$search={encoded}&"));
        }
        if query.count {
            link.push_str("$count=true&");
        }
        // The quotes are percent-encoded, as in Graph's own links.
        let token = encode_skiptoken(end).replace('\'', "%27");
        link.push_str(&format!("$skiptoken={token}"));
        link
    });
    let page = Page {
        context: query.select.context(&origin, ""),
        count,
        next_link,
        value,
    };
    let body = serde_json::to_vec(&page).map_err(|e| internal(e, &ids))?;
    drop(directory);
    Ok(json_response(body))
}

pub(crate) fn internal(error: impl std::fmt::Display, ids: &RequestIds) -> GraphError {
    GraphError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "generalException",
        error.to_string(),
        ids,
    )
}

pub(crate) async fn get_user(
    State(state): State<AppState>,
    Extension(ids): Extension<RequestIds>,
    Path(id_or_upn): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, GraphError> {
    let query = Query::parse(&uri, &["$select"], &ids)?;
    let origin = origin(&state, &headers);
    let directory = state.directory();
    let Some(user) = directory.find(&id_or_upn) else {
        return Err(GraphError::new(
            StatusCode::NOT_FOUND,
            "Request_ResourceNotFound",
            format!(
                "Resource '{id_or_upn}' does not exist or one of its queried reference-property objects are not present."
            ),
            &ids,
        ));
    };
    let mut body = serde_json::Map::new();
    body.insert(
        "@odata.context".to_owned(),
        query.select.context(&origin, "/$entity").into(),
    );
    let selected = serde_json::to_value(SelectedUser {
        user,
        properties: query.select.properties(),
        typed: false,
    })
    .map_err(|e| internal(e, &ids))?;
    if let serde_json::Value::Object(properties) = selected {
        body.extend(properties);
    }
    drop(directory);
    let body = serde_json::to_vec(&body).map_err(|e| internal(e, &ids))?;
    Ok(json_response(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skiptokens_round_trip_and_reject_tampering() {
        for offset in [0, 1, 999, 1_000_000] {
            let token = encode_skiptoken(offset);
            assert_eq!(decode_skiptoken(&token), Some(offset));
        }
        let token = encode_skiptoken(999);
        let mut tampered: Vec<char> = token.chars().collect();
        tampered[5] = if tampered[5] == 'A' { 'B' } else { 'A' };
        let tampered: String = tampered.into_iter().collect();
        assert_eq!(decode_skiptoken(&tampered), None);
        assert_eq!(decode_skiptoken("999"), None);
    }

    #[test]
    fn skiptokens_do_not_show_the_offset() {
        assert!(!encode_skiptoken(999).contains("999"));
    }
}
