//! SCIM 2.0 resources as Entra's provisioning service pushes them (issue 18): the errors of
//! RFC 7644 §3.12, filters (§3.4.2.2, parsed by `scim_v2`, evaluated here), PATCH (§3.5.2,
//! with the shapes Entra sends: `op` in any case, `active` as the string `"False"`, member
//! removals listed in `value`), attribute projection, and the fields a User gives the mirror
//! under Entra's default attribute mapping.
//!
//! A resource is kept as the JSON object the client last wrote (its attributes under the
//! names this service publishes), without `id` and `meta`, which the server owns. A Group's
//! `members` are not kept in it: a group of a hundred thousand members would be rewritten
//! whole by every membership PATCH, so member operations come out of [`apply_patch`] as
//! [`MemberOp`]s for the store to apply to its membership table.

use scim_v2::filter::{
    AttrExp, AttrPath, CompValue, CompareOp, Filter, PatchPath, PatchValuePath, ValFilter,
};
use serde_json::{Map, Value};

pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const ENTERPRISE_SCHEMA: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
pub const PATCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
pub const LIST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
pub const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";

/// The two resource types this service serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    User,
    Group,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::User => "User",
            Kind::Group => "Group",
        }
    }

    /// The core schema every resource of this kind carries.
    pub fn schema(self) -> &'static str {
        match self {
            Kind::User => USER_SCHEMA,
            Kind::Group => GROUP_SCHEMA,
        }
    }

    /// Every schema a resource of this kind may carry.
    fn schemas(self) -> &'static [&'static str] {
        match self {
            Kind::User => &[USER_SCHEMA, ENTERPRISE_SCHEMA],
            Kind::Group => &[GROUP_SCHEMA],
        }
    }

    /// The attribute that names a resource uniquely in its tenant (case-insensitive).
    pub fn unique_attribute(self) -> &'static str {
        match self {
            Kind::User => "userName",
            Kind::Group => "displayName",
        }
    }
}

/// An error as RFC 7644 §3.12 answers it: an HTTP status and, for 400s, a `scimType`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {}: {detail}", scim_type.unwrap_or("-"))]
pub struct ScimError {
    pub status: u16,
    pub scim_type: Option<&'static str>,
    pub detail: String,
}

impl ScimError {
    fn bad(scim_type: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status: 400,
            scim_type: Some(scim_type),
            detail: detail.into(),
        }
    }
    pub fn invalid_value(detail: impl Into<String>) -> Self {
        Self::bad("invalidValue", detail)
    }
    pub fn invalid_syntax(detail: impl Into<String>) -> Self {
        Self::bad("invalidSyntax", detail)
    }
    pub fn invalid_filter(detail: impl Into<String>) -> Self {
        Self::bad("invalidFilter", detail)
    }
    pub fn invalid_path(detail: impl Into<String>) -> Self {
        Self::bad("invalidPath", detail)
    }
    pub fn no_target(detail: impl Into<String>) -> Self {
        Self::bad("noTarget", detail)
    }
    pub fn mutability(detail: impl Into<String>) -> Self {
        Self::bad("mutability", detail)
    }
    pub fn too_many(detail: impl Into<String>) -> Self {
        Self::bad("tooMany", detail)
    }
    pub fn uniqueness(detail: impl Into<String>) -> Self {
        Self {
            status: 409,
            scim_type: Some("uniqueness"),
            detail: detail.into(),
        }
    }
    pub fn status(status: u16, detail: impl Into<String>) -> Self {
        Self {
            status,
            scim_type: None,
            detail: detail.into(),
        }
    }
    pub fn not_found(kind: Kind, id: &str) -> Self {
        Self::status(404, format!("{} {id:?} not found", kind.as_str()))
    }

    /// The response body.
    pub fn body(&self) -> Value {
        let mut body = serde_json::json!({
            "schemas": [ERROR_SCHEMA],
            "status": self.status.to_string(),
            "detail": self.detail,
        });
        if let Some(scim_type) = self.scim_type {
            body["scimType"] = Value::from(scim_type);
        }
        body
    }
}

/// The value under `name` (attribute names are case-insensitive, RFC 7643 §2.1).
pub fn get_ci<'a>(object: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    object
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value)
}

fn key_ci(object: &Map<String, Value>, name: &str) -> Option<String> {
    object
        .keys()
        .find(|key| key.eq_ignore_ascii_case(name))
        .cloned()
}

fn remove_ci(object: &mut Map<String, Value>, name: &str) -> Option<Value> {
    key_ci(object, name).and_then(|key| object.remove(&key))
}

/// Sets `name`, keeping the spelling of a key already there.
fn set_ci(object: &mut Map<String, Value>, name: &str, value: Value) {
    let key = key_ci(object, name).unwrap_or_else(|| name.to_owned());
    object.insert(key, value);
}

/// A string attribute, `None` when absent or null.
pub fn string_of(object: &Map<String, Value>, name: &str) -> Result<Option<String>, ScimError> {
    match get_ci(object, name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(ScimError::invalid_value(format!(
            "{name} must be a string, not {other}"
        ))),
    }
}

/// A boolean attribute. Entra sends `active` as the string `"False"` in some PATCHes.
fn boolean(value: &Value, name: &str) -> Result<bool, ScimError> {
    match value {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(false),
        other => Err(ScimError::invalid_value(format!(
            "{name} must be a boolean, not {other}"
        ))),
    }
}

/// A resource as kept, and a Group's member ids (apart).
pub type Normalized = (Map<String, Value>, Option<Vec<String>>);

/// Checks a resource a client sent (POST or PUT) and returns it as kept: only known schemas,
/// the unique attribute present, `active` a boolean, `id`/`meta` (server-owned) dropped and a
/// Group's `members` taken out (returned apart).
pub fn normalize(kind: Kind, body: Value) -> Result<Normalized, ScimError> {
    let Value::Object(mut object) = body else {
        return Err(ScimError::invalid_syntax("the body must be a JSON object"));
    };
    let schemas = match get_ci(&object, "schemas") {
        Some(Value::Array(items)) => items
            .iter()
            .map(|s| s.as_str().map(str::to_owned))
            .collect::<Option<Vec<String>>>()
            .ok_or_else(|| ScimError::invalid_syntax("schemas must be a list of strings"))?,
        _ => return Err(ScimError::invalid_syntax("schemas is missing")),
    };
    if !schemas
        .iter()
        .any(|s| s.eq_ignore_ascii_case(kind.schema()))
    {
        return Err(ScimError::invalid_syntax(format!(
            "schemas must include {}",
            kind.schema()
        )));
    }
    if let Some(unknown) = schemas
        .iter()
        .find(|s| !kind.schemas().iter().any(|k| k.eq_ignore_ascii_case(s)))
    {
        return Err(ScimError::invalid_value(format!(
            "unknown schema {unknown:?}"
        )));
    }
    remove_ci(&mut object, "id");
    remove_ci(&mut object, "meta");
    // Extension attributes live under their schema's URN.
    for (key, value) in &object {
        if key.contains(':') && !kind.schemas().iter().any(|k| k.eq_ignore_ascii_case(key)) {
            return Err(ScimError::invalid_value(format!("unknown schema {key:?}")));
        }
        if key.contains(':') && !value.is_object() {
            return Err(ScimError::invalid_syntax(format!(
                "{key} must be an object"
            )));
        }
    }
    let unique = kind.unique_attribute();
    match string_of(&object, unique)? {
        Some(name) if !name.trim().is_empty() => {}
        _ => return Err(ScimError::invalid_value(format!("{unique} is required"))),
    }
    string_of(&object, "externalId")?;
    if let Some(active) = get_ci(&object, "active").cloned() {
        let active = boolean(&active, "active")?;
        set_ci(&mut object, "active", Value::Bool(active));
    }
    let members = match kind {
        Kind::User => None,
        Kind::Group => Some(match remove_ci(&mut object, "members") {
            None | Some(Value::Null) => Vec::new(),
            Some(value) => member_ids(&value)?,
        }),
    };
    Ok((object, members))
}

/// The member ids of a `members` value: a list of `{"value": id}` (or one such object).
fn member_ids(value: &Value) -> Result<Vec<String>, ScimError> {
    let items: Vec<&Value> = match value {
        Value::Array(items) => items.iter().collect(),
        Value::Object(_) => vec![value],
        other => {
            return Err(ScimError::invalid_value(format!(
                "members must be a list of {{\"value\": id}}, not {other}"
            )));
        }
    };
    items
        .into_iter()
        .map(
            |item| match item.as_object().map(|o| string_of(o, "value")) {
                Some(Ok(Some(id))) if !id.is_empty() => Ok(id),
                _ => Err(ScimError::invalid_value(format!(
                    "a member must be {{\"value\": id}}, not {item}"
                ))),
            },
        )
        .collect()
}

/// What a User gives the mirror, under Entra's default attribute mapping
/// (userPrincipalName → userName, objectId → externalId, mail → the work or primary email,
/// displayName, givenName/surname → name, accountEnabled → active, userType).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserFields {
    pub user_name: String,
    pub external_id: Option<String>,
    pub mail: Option<String>,
    pub display_name: Option<String>,
    pub given_name: Option<String>,
    pub surname: Option<String>,
    pub active: bool,
    pub user_type: Option<String>,
}

pub fn user_fields(user: &Map<String, Value>) -> Result<UserFields, ScimError> {
    let name = match get_ci(user, "name") {
        Some(Value::Object(name)) => Some(name),
        None | Some(Value::Null) => None,
        Some(other) => {
            return Err(ScimError::invalid_value(format!(
                "name must be an object, not {other}"
            )));
        }
    };
    let part = |key: &str| -> Result<Option<String>, ScimError> {
        name.map_or(Ok(None), |name| string_of(name, key))
    };
    let emails = match get_ci(user, "emails") {
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_object).collect(),
        None | Some(Value::Null) => Vec::new(),
        Some(other) => {
            return Err(ScimError::invalid_value(format!(
                "emails must be a list, not {other}"
            )));
        }
    };
    let is = |email: &&Map<String, Value>, key: &str, wanted: &Value| -> bool {
        get_ci(email, key).is_some_and(|v| match (v, wanted) {
            (Value::String(a), Value::String(b)) => a.eq_ignore_ascii_case(b),
            (a, b) => a == b,
        })
    };
    let mail = emails
        .iter()
        .find(|e| is(e, "type", &Value::from("work")))
        .or_else(|| emails.iter().find(|e| is(e, "primary", &Value::Bool(true))))
        .or_else(|| emails.first())
        .map(|e| string_of(e, "value"))
        .transpose()?
        .flatten();
    let display_name = match string_of(user, "displayName")? {
        Some(name) => Some(name),
        None => match part("formatted")? {
            Some(formatted) => Some(formatted),
            None => {
                let joined = [part("givenName")?, part("familyName")?]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(" ");
                (!joined.is_empty()).then_some(joined)
            }
        },
    };
    Ok(UserFields {
        user_name: string_of(user, "userName")?.unwrap_or_default(),
        external_id: string_of(user, "externalId")?,
        mail,
        display_name,
        given_name: part("givenName")?,
        surname: part("familyName")?,
        active: get_ci(user, "active")
            .map(|v| boolean(v, "active"))
            .transpose()?
            .unwrap_or(true),
        user_type: string_of(user, "userType")?,
    })
}

/// Parses a `filter` query parameter; anything outside the grammar (such as
/// `userName eq "x" or 1 eq 1`) is `invalidFilter`.
pub fn parse_filter(text: &str) -> Result<Filter, ScimError> {
    text.parse::<Filter>()
        .map_err(|e| ScimError::invalid_filter(format!("filter {text:?} is not valid: {e}")))
}

/// An equality on an attribute the store indexes, which a filter requires (a conjunct at its
/// top): the store reads that resource and the whole filter is checked on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Id(String),
    ExternalId(String),
    /// `userName` of a User, `displayName` of a Group (case-insensitive).
    UniqueName(String),
}

pub fn lookup_of(kind: Kind, filter: &Filter) -> Option<Lookup> {
    let conjuncts: Vec<&Filter> = match filter {
        Filter::And(items) => items.iter().collect(),
        other => vec![other],
    };
    conjuncts.into_iter().find_map(|f| match f {
        Filter::Attr(AttrExp::Comparison(path, CompareOp::Eq, CompValue::Str(value)))
            if path.sub_attr.is_none() =>
        {
            let name = path.name.as_str();
            if name.eq_ignore_ascii_case("id") {
                Some(Lookup::Id(value.clone()))
            } else if name.eq_ignore_ascii_case("externalId") {
                Some(Lookup::ExternalId(value.clone()))
            } else if name.eq_ignore_ascii_case(kind.unique_attribute()) {
                Some(Lookup::UniqueName(value.clone()))
            } else {
                None
            }
        }
        _ => None,
    })
}

/// Attributes compared exactly; every other string compares without case (RFC 7643 leaves
/// most of the core attributes `caseExact: false`).
fn case_exact(path: &AttrPath) -> bool {
    let name = path.sub_attr.as_deref().unwrap_or(&path.name);
    ["id", "externalId"]
        .iter()
        .any(|exact| exact.eq_ignore_ascii_case(name))
        && path.sub_attr.is_none()
}

/// The values an attribute path reaches in a resource (a multi-valued attribute's elements
/// each count; extension attributes are reached through their schema URN).
fn values_at<'a>(resource: &'a Map<String, Value>, path: &AttrPath) -> Vec<&'a Value> {
    let core = |uri: &str| {
        [USER_SCHEMA, GROUP_SCHEMA]
            .iter()
            .any(|s| s.eq_ignore_ascii_case(uri))
    };
    let base = match &path.uri {
        Some(uri) if !core(uri) => match get_ci(resource, uri) {
            Some(Value::Object(extension)) => extension,
            _ => return Vec::new(),
        },
        _ => resource,
    };
    let Some(value) = get_ci(base, &path.name) else {
        return Vec::new();
    };
    let items: Vec<&Value> = match value {
        Value::Array(items) => items.iter().collect(),
        other => vec![other],
    };
    match &path.sub_attr {
        None => items,
        Some(sub) => items
            .into_iter()
            .filter_map(|item| item.as_object().and_then(|o| get_ci(o, sub)))
            .collect(),
    }
}

fn compare(value: &Value, op: &CompareOp, wanted: &CompValue, exact: bool) -> bool {
    use std::cmp::Ordering;
    let ordering: Option<Ordering> = match (value, wanted) {
        (Value::String(a), CompValue::Str(b)) => {
            let (a, b) = if exact {
                (a.clone(), b.clone())
            } else {
                (a.to_lowercase(), b.to_lowercase())
            };
            match op {
                CompareOp::Co => return a.contains(&b),
                CompareOp::Sw => return a.starts_with(&b),
                CompareOp::Ew => return a.ends_with(&b),
                _ => Some(a.cmp(&b)),
            }
        }
        (Value::Bool(a), CompValue::True) => Some(a.cmp(&true)),
        (Value::Bool(a), CompValue::False) => Some(a.cmp(&false)),
        (Value::Number(a), CompValue::Number(b)) => a
            .as_f64()
            .zip(b.as_f64())
            .and_then(|(a, b)| a.partial_cmp(&b)),
        (Value::Null, CompValue::Null) => Some(Ordering::Equal),
        _ => None,
    };
    match (op, ordering) {
        (CompareOp::Ne, None) => true,
        (_, None) => false,
        (CompareOp::Eq, Some(o)) => o == Ordering::Equal,
        (CompareOp::Ne, Some(o)) => o != Ordering::Equal,
        (CompareOp::Gt, Some(o)) => o == Ordering::Greater,
        (CompareOp::Ge, Some(o)) => o != Ordering::Less,
        (CompareOp::Lt, Some(o)) => o == Ordering::Less,
        (CompareOp::Le, Some(o)) => o != Ordering::Greater,
        (CompareOp::Co | CompareOp::Sw | CompareOp::Ew, Some(_)) => false,
    }
}

fn attr_matches(resource: &Map<String, Value>, expression: &AttrExp) -> bool {
    match expression {
        AttrExp::Present(path) => values_at(resource, path).iter().any(|v| match v {
            Value::Null => false,
            Value::String(s) => !s.is_empty(),
            Value::Array(items) => !items.is_empty(),
            _ => true,
        }),
        AttrExp::Comparison(path, op, wanted) => {
            let values = values_at(resource, path);
            if values.is_empty() {
                return *op == CompareOp::Ne;
            }
            let exact = case_exact(path);
            values.iter().any(|v| compare(v, op, wanted, exact))
        }
    }
}

fn val_matches(element: &Map<String, Value>, filter: &ValFilter) -> bool {
    match filter {
        ValFilter::Attr(expression) => attr_matches(element, expression),
        ValFilter::Not(inner) => !val_matches(element, inner),
        ValFilter::And(items) => items.iter().all(|f| val_matches(element, f)),
        ValFilter::Or(items) => items.iter().any(|f| val_matches(element, f)),
    }
}

/// Whether a resource (as kept, with `id` and `externalId`) matches a filter.
pub fn matches(resource: &Map<String, Value>, filter: &Filter) -> bool {
    match filter {
        Filter::Attr(expression) => attr_matches(resource, expression),
        Filter::ValuePath(value_path) => values_at(resource, &value_path.attr)
            .into_iter()
            .filter_map(Value::as_object)
            .any(|element| val_matches(element, &value_path.filter)),
        Filter::Not(inner) => !matches(resource, inner),
        Filter::And(items) => items.iter().all(|f| matches(resource, f)),
        Filter::Or(items) => items.iter().any(|f| matches(resource, f)),
    }
}

/// A change to a Group's members, for the store's membership table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberOp {
    Add(Vec<String>),
    Remove(Vec<String>),
    /// Every member replaced by these (an empty list removes all).
    Replace(Vec<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Add,
    Replace,
    Remove,
}

/// Applies a PATCH request's operations, in order, to a resource as kept. Member operations of
/// a Group come back as [`MemberOp`]s. A failing operation fails the whole request and leaves
/// the resource as it was.
pub fn apply_patch(
    kind: Kind,
    resource: &mut Map<String, Value>,
    request: &Value,
) -> Result<Vec<MemberOp>, ScimError> {
    let mut patched = resource.clone();
    let member_ops = patch_all(kind, &mut patched, request)?;
    *resource = patched;
    Ok(member_ops)
}

fn patch_all(
    kind: Kind,
    resource: &mut Map<String, Value>,
    request: &Value,
) -> Result<Vec<MemberOp>, ScimError> {
    let Value::Object(request) = request else {
        return Err(ScimError::invalid_syntax("the body must be a JSON object"));
    };
    let patch_schema = matches!(get_ci(request, "schemas"), Some(Value::Array(s))
        if s.iter().any(|s| s.as_str().is_some_and(|s| s.eq_ignore_ascii_case(PATCH_SCHEMA))));
    if !patch_schema {
        return Err(ScimError::invalid_syntax(format!(
            "schemas must be [{PATCH_SCHEMA:?}]"
        )));
    }
    let Some(Value::Array(operations)) = get_ci(request, "Operations") else {
        return Err(ScimError::invalid_syntax("Operations must be a list"));
    };
    let mut member_ops = Vec::new();
    for operation in operations {
        let Value::Object(operation) = operation else {
            return Err(ScimError::invalid_syntax("an operation must be an object"));
        };
        let op = match string_of(operation, "op")?
            .as_deref()
            .map(str::to_ascii_lowercase)
        {
            Some(op) if op == "add" => Op::Add,
            Some(op) if op == "replace" => Op::Replace,
            Some(op) if op == "remove" => Op::Remove,
            other => {
                return Err(ScimError::invalid_syntax(format!(
                    "op must be add, replace or remove, not {other:?}"
                )));
            }
        };
        let value = get_ci(operation, "value").cloned();
        match string_of(operation, "path")? {
            None => {
                if op == Op::Remove {
                    return Err(ScimError::no_target("remove needs a path"));
                }
                let Some(Value::Object(values)) = value else {
                    return Err(ScimError::invalid_value(
                        "an operation without a path needs an object as its value",
                    ));
                };
                for (name, value) in values {
                    patch_attribute(kind, resource, &mut member_ops, op, &name, value)?;
                }
            }
            Some(path) => {
                patch_path(kind, resource, &mut member_ops, op, &path, value)?;
            }
        }
    }
    if let Some(active) = get_ci(resource, "active").cloned() {
        let active = boolean(&active, "active")?;
        set_ci(resource, "active", Value::Bool(active));
    }
    let unique = kind.unique_attribute();
    if !matches!(string_of(resource, unique)?, Some(name) if !name.trim().is_empty()) {
        return Err(ScimError::invalid_value(format!("{unique} is required")));
    }
    // `schemas` names the extensions the resource holds, after the patch as before.
    let mut schemas = vec![Value::from(kind.schema())];
    for extension in &kind.schemas()[1..] {
        if let Some(Value::Object(attributes)) = get_ci(resource, extension) {
            if attributes.is_empty() {
                remove_ci(resource, extension);
            } else {
                schemas.push(Value::from(*extension));
            }
        }
    }
    set_ci(resource, "schemas", Value::Array(schemas));
    Ok(member_ops)
}

fn is_members(kind: Kind, name: &str) -> bool {
    kind == Kind::Group && name.eq_ignore_ascii_case("members")
}

fn read_only(name: &str) -> bool {
    ["id", "meta", "schemas"]
        .iter()
        .any(|n| n.eq_ignore_ascii_case(name))
}

/// An operation without a path, one attribute of its value at a time (an extension's URN
/// holds an object of its attributes).
fn patch_attribute(
    kind: Kind,
    resource: &mut Map<String, Value>,
    member_ops: &mut Vec<MemberOp>,
    op: Op,
    name: &str,
    value: Value,
) -> Result<(), ScimError> {
    if read_only(name) {
        return Err(ScimError::mutability(format!("{name} cannot be changed")));
    }
    if is_members(kind, name) {
        let ids = member_ids(&value)?;
        member_ops.push(match op {
            Op::Replace => MemberOp::Replace(ids),
            _ => MemberOp::Add(ids),
        });
        return Ok(());
    }
    let extension = kind.schemas().iter().any(|s| s.eq_ignore_ascii_case(name));
    // Entra's non-RFC shape: a dotted or URN-qualified name as a key of a path-less value.
    if !extension && (name.contains('.') || name.contains(':')) {
        return patch_path(kind, resource, member_ops, op, name, Some(value));
    }
    if extension {
        let Value::Object(values) = value else {
            return Err(ScimError::invalid_syntax(format!(
                "{name} must be an object"
            )));
        };
        let key = key_ci(resource, name).unwrap_or_else(|| name.to_owned());
        let extension = resource
            .entry(key)
            .or_insert_with(|| Value::Object(Map::new()));
        let Value::Object(extension) = extension else {
            return Err(ScimError::invalid_syntax(format!(
                "{name} must be an object"
            )));
        };
        for (sub, value) in values {
            set_value(extension, op, &sub, value);
        }
        return Ok(());
    }
    set_value(resource, op, name, value);
    Ok(())
}

/// `add` merges into a complex attribute and appends to a multi-valued one; `replace`
/// overwrites. A null value removes the attribute.
fn set_value(object: &mut Map<String, Value>, op: Op, name: &str, value: Value) {
    if value.is_null() {
        remove_ci(object, name);
        return;
    }
    let key = key_ci(object, name).unwrap_or_else(|| name.to_owned());
    match (op, object.get_mut(&key), value) {
        (Op::Add, Some(Value::Array(items)), Value::Array(new)) => {
            for item in new {
                if !items.contains(&item) {
                    items.push(item);
                }
            }
        }
        (Op::Add, Some(Value::Object(existing)), Value::Object(new)) => {
            for (sub, value) in new {
                set_value(existing, Op::Replace, &sub, value);
            }
        }
        (_, _, value) => {
            object.insert(key, value);
        }
    }
}

fn parse_path(text: &str) -> Result<PatchPath, ScimError> {
    text.parse::<PatchPath>()
        .map_err(|e| ScimError::invalid_path(format!("path {text:?} is not valid: {e}")))
}

/// The object an attribute path's name lives in: the resource, or an extension's object.
fn container<'a>(
    kind: Kind,
    resource: &'a mut Map<String, Value>,
    path: &AttrPath,
    create: bool,
) -> Result<Option<&'a mut Map<String, Value>>, ScimError> {
    let Some(uri) = &path.uri else {
        return Ok(Some(resource));
    };
    if kind.schema().eq_ignore_ascii_case(uri) {
        return Ok(Some(resource));
    }
    if !kind.schemas().iter().any(|s| s.eq_ignore_ascii_case(uri)) {
        return Err(ScimError::invalid_path(format!("unknown schema {uri:?}")));
    }
    let key = match key_ci(resource, uri) {
        Some(key) => key,
        None if create => {
            resource.insert(uri.clone(), Value::Object(Map::new()));
            uri.clone()
        }
        None => return Ok(None),
    };
    match resource.get_mut(&key) {
        Some(Value::Object(extension)) => Ok(Some(extension)),
        _ => Err(ScimError::invalid_path(format!("{uri} is not an object"))),
    }
}

fn patch_path(
    kind: Kind,
    resource: &mut Map<String, Value>,
    member_ops: &mut Vec<MemberOp>,
    op: Op,
    text: &str,
    value: Option<Value>,
) -> Result<(), ScimError> {
    // A whole extension (`urn:…:enterprise:2.0:User`): its URN does not parse as a path (the
    // grammar would read `User` as an attribute of `urn:…:2.0`).
    if kind.schemas()[1..]
        .iter()
        .any(|s| s.eq_ignore_ascii_case(text))
    {
        if op == Op::Remove {
            remove_ci(resource, text);
            return Ok(());
        }
        let value =
            value.ok_or_else(|| ScimError::invalid_value(format!("{text} needs a value")))?;
        if op == Op::Replace {
            remove_ci(resource, text);
        }
        return patch_attribute(kind, resource, member_ops, op, text, value);
    }
    let path = parse_path(text)?;
    let attr = match &path {
        PatchPath::Attr(attr) => attr,
        PatchPath::Value(value_path) => &value_path.attr,
    };
    if read_only(&attr.name) && attr.uri.is_none() {
        return Err(ScimError::mutability(format!(
            "{} cannot be changed",
            attr.name
        )));
    }
    if is_members(kind, &attr.name) {
        member_ops.push(member_op(op, &path, value)?);
        return Ok(());
    }
    let create = op != Op::Remove;
    let Some(object) = container(kind, resource, attr, create)? else {
        return Ok(());
    };
    match path {
        PatchPath::Attr(attr) => match (&attr.sub_attr, op) {
            (None, Op::Remove) => {
                remove_ci(object, &attr.name);
            }
            (None, _) => {
                let value = value
                    .ok_or_else(|| ScimError::invalid_value(format!("{text} needs a value")))?;
                set_value(object, op, &attr.name, value);
            }
            (Some(sub), op) => {
                let key = key_ci(object, &attr.name).unwrap_or_else(|| attr.name.clone());
                match object.get_mut(&key) {
                    Some(Value::Object(complex)) => match op {
                        Op::Remove => {
                            remove_ci(complex, sub);
                        }
                        _ => {
                            let value = value.ok_or_else(|| {
                                ScimError::invalid_value(format!("{text} needs a value"))
                            })?;
                            set_value(complex, op, sub, value);
                        }
                    },
                    Some(Value::Array(items)) => {
                        // A sub-attribute of every element of a multi-valued attribute.
                        for item in items.iter_mut().filter_map(Value::as_object_mut) {
                            match (op, &value) {
                                (Op::Remove, _) => {
                                    remove_ci(item, sub);
                                }
                                (_, Some(value)) => set_value(item, op, sub, value.clone()),
                                (_, None) => {
                                    return Err(ScimError::invalid_value(format!(
                                        "{text} needs a value"
                                    )));
                                }
                            }
                        }
                    }
                    None if op == Op::Remove => {}
                    None => {
                        let value = value.ok_or_else(|| {
                            ScimError::invalid_value(format!("{text} needs a value"))
                        })?;
                        let mut complex = Map::new();
                        complex.insert(sub.clone(), value);
                        object.insert(key, Value::Object(complex));
                    }
                    Some(_) => {
                        return Err(ScimError::invalid_path(format!(
                            "{} is not complex",
                            attr.name
                        )));
                    }
                }
            }
        },
        PatchPath::Value(PatchValuePath {
            attr,
            filter,
            sub_attr,
        }) => {
            let key = key_ci(object, &attr.name);
            let items = match key.as_ref().and_then(|k| object.get_mut(k)) {
                Some(Value::Array(items)) => items,
                _ if op == Op::Remove => return Ok(()),
                _ => {
                    // RFC 7644 §3.5.2.3: a filter that matches nothing is noTarget for
                    // replace; add creates the element (Entra adds emails[type eq "work"].value).
                    if let Some(existing) = key.as_ref().and_then(|k| object.get(k))
                        && !existing.is_array()
                    {
                        return Err(ScimError::invalid_path(format!(
                            "{} is not multi-valued",
                            attr.name
                        )));
                    }
                    object.insert(attr.name.clone(), Value::Array(Vec::new()));
                    match object.get_mut(&attr.name) {
                        Some(Value::Array(items)) => items,
                        _ => unreachable!("just inserted"),
                    }
                }
            };
            let matching: Vec<usize> = items
                .iter()
                .enumerate()
                .filter(|(_, item)| item.as_object().is_some_and(|o| val_matches(o, &filter)))
                .map(|(i, _)| i)
                .collect();
            match (op, sub_attr) {
                (Op::Remove, None) => {
                    for i in matching.into_iter().rev() {
                        items.remove(i);
                    }
                }
                (Op::Remove, Some(sub)) => {
                    for i in matching {
                        if let Some(item) = items[i].as_object_mut() {
                            remove_ci(item, &sub);
                        }
                    }
                }
                (op, sub) => {
                    let value = value
                        .ok_or_else(|| ScimError::invalid_value(format!("{text} needs a value")))?;
                    if matching.is_empty() {
                        if op == Op::Replace && sub.is_none() {
                            return Err(ScimError::no_target(format!("nothing matches {text}")));
                        }
                        // The element the filter describes, made: `emails[type eq "work"].value`.
                        let mut element = element_from_filter(&filter);
                        match sub {
                            Some(sub) => {
                                element.insert(sub, value);
                            }
                            None => match value {
                                Value::Object(fields) => element.extend(fields),
                                other => {
                                    element.insert("value".to_owned(), other);
                                }
                            },
                        }
                        items.push(Value::Object(element));
                    } else {
                        for i in matching {
                            let Some(item) = items[i].as_object_mut() else {
                                continue;
                            };
                            match (&sub, &value) {
                                (Some(sub), value) => {
                                    set_value(item, Op::Replace, sub, value.clone())
                                }
                                (None, Value::Object(fields)) => {
                                    if op == Op::Replace {
                                        item.clear();
                                    }
                                    for (k, v) in fields {
                                        set_value(item, Op::Replace, k, v.clone());
                                    }
                                }
                                (None, other) => {
                                    return Err(ScimError::invalid_value(format!(
                                        "{text} needs an object, not {other}"
                                    )));
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// The attributes an equality filter fixes (`type eq "work"` → `{"type": "work"}`).
fn element_from_filter(filter: &ValFilter) -> Map<String, Value> {
    let mut element = Map::new();
    let mut add = |f: &ValFilter| {
        if let ValFilter::Attr(AttrExp::Comparison(path, CompareOp::Eq, value)) = f {
            let value = match value {
                CompValue::Str(s) => Value::from(s.clone()),
                CompValue::True => Value::Bool(true),
                CompValue::False => Value::Bool(false),
                CompValue::Number(n) => Value::Number(n.clone()),
                CompValue::Null => return,
            };
            element.insert(path.name.clone(), value);
        }
    };
    match filter {
        ValFilter::And(items) => items.iter().for_each(&mut add),
        other => add(other),
    }
    element
}

/// A membership operation. Entra removes members with `path: "members"` and the members in
/// `value` (not the RFC's `members[value eq "…"]`, which it also sends); a remove of
/// `members` with no value removes them all.
fn member_op(op: Op, path: &PatchPath, value: Option<Value>) -> Result<MemberOp, ScimError> {
    match path {
        PatchPath::Attr(attr) if attr.sub_attr.is_none() => match (op, value) {
            (Op::Add, Some(value)) => Ok(MemberOp::Add(member_ids(&value)?)),
            (Op::Replace, Some(value)) => Ok(MemberOp::Replace(member_ids(&value)?)),
            (Op::Remove, Some(value)) if !value.is_null() => {
                Ok(MemberOp::Remove(member_ids(&value)?))
            }
            (Op::Remove, _) => Ok(MemberOp::Replace(Vec::new())),
            (_, None) => Err(ScimError::invalid_value("members needs a value")),
        },
        PatchPath::Value(value_path) if value_path.sub_attr.is_none() && op == Op::Remove => {
            Ok(MemberOp::Remove(ids_of_member_filter(&value_path.filter)?))
        }
        _ => Err(ScimError::invalid_path(
            "members supports add, replace and remove of members, and remove by members[value eq \"id\"]",
        )),
    }
}

/// The ids a member filter names: `value eq "a"`, or such equalities joined by `or`.
fn ids_of_member_filter(filter: &ValFilter) -> Result<Vec<String>, ScimError> {
    match filter {
        ValFilter::Attr(AttrExp::Comparison(path, CompareOp::Eq, CompValue::Str(id)))
            if path.name.eq_ignore_ascii_case("value") && path.sub_attr.is_none() =>
        {
            Ok(vec![id.clone()])
        }
        ValFilter::Or(items) => items.iter().try_fold(Vec::new(), |mut ids, item| {
            ids.extend(ids_of_member_filter(item)?);
            Ok(ids)
        }),
        other => Err(ScimError::invalid_filter(format!(
            "a member filter must be value eq \"id\" (joined by or), not {other}"
        ))),
    }
}

/// Applies `attributes` / `excludedAttributes` (RFC 7644 §3.9) to a response resource.
/// `id` and `schemas` are always returned.
pub fn project(resource: &mut Map<String, Value>, attributes: &[String], excluded: &[String]) {
    let always = |key: &str| {
        ["id", "schemas"]
            .iter()
            .any(|k| k.eq_ignore_ascii_case(key))
    };
    let named = |list: &[String], key: &str, sub: Option<&str>| -> bool {
        list.iter().any(|wanted| {
            let wanted = wanted.as_str();
            let (uri_key, rest) = match wanted.rsplit_once(':') {
                Some((uri, rest)) => (Some(uri), rest),
                None => (None, wanted),
            };
            let (name, wanted_sub) = match rest.split_once('.') {
                Some((name, sub)) => (name, Some(sub)),
                None => (rest, None),
            };
            let top = match uri_key {
                // `urn:…:User:userName` names a core attribute; `urn:…:enterprise:2.0:User`
                // alone names the extension.
                Some(uri) if key.eq_ignore_ascii_case(uri) => {
                    return sub.is_none_or(|s| s.eq_ignore_ascii_case(name));
                }
                Some(_) if key.contains(':') && wanted.eq_ignore_ascii_case(key) => return true,
                _ => name,
            };
            key.eq_ignore_ascii_case(top)
                && match (wanted_sub, sub) {
                    (None, _) => true,
                    (Some(w), Some(s)) => w.eq_ignore_ascii_case(s),
                    (Some(_), None) => true,
                }
        })
    };
    if !attributes.is_empty() {
        resource.retain(|key, value| {
            if always(key) || named(attributes, key, None) && !key.contains(':') {
                if let Value::Object(complex) = value
                    && !key.contains(':')
                {
                    let subs: Vec<String> = attributes
                        .iter()
                        .filter_map(|a| a.split_once('.'))
                        .filter(|(n, _)| n.eq_ignore_ascii_case(key))
                        .map(|(_, s)| s.to_owned())
                        .collect();
                    if !subs.is_empty() && !attributes.iter().any(|a| a.eq_ignore_ascii_case(key)) {
                        complex.retain(|k, _| subs.iter().any(|s| s.eq_ignore_ascii_case(k)));
                    }
                }
                return true;
            }
            if key.contains(':')
                && let Value::Object(extension) = value
            {
                let whole = attributes.iter().any(|a| a.eq_ignore_ascii_case(key));
                if !whole {
                    extension.retain(|sub, _| named(attributes, key, Some(sub)));
                }
                return whole || !extension.is_empty();
            }
            key.eq_ignore_ascii_case("meta")
                && attributes.iter().any(|a| a.eq_ignore_ascii_case("meta"))
        });
    }
    if !excluded.is_empty() {
        resource.retain(|key, value| {
            if always(key) {
                return true;
            }
            if key.contains(':')
                && let Value::Object(extension) = value
            {
                if excluded.iter().any(|a| a.eq_ignore_ascii_case(key)) {
                    return false;
                }
                extension.retain(|sub, _| !named(excluded, key, Some(sub)));
                return true;
            }
            if let Value::Object(complex) = value {
                complex.retain(|sub, _| {
                    !excluded.iter().any(|a| {
                        a.split_once('.').is_some_and(|(n, s)| {
                            n.eq_ignore_ascii_case(key) && s.eq_ignore_ascii_case(sub)
                        })
                    })
                });
            }
            !excluded.iter().any(|a| a.eq_ignore_ascii_case(key))
        });
    }
}

/// One attribute of a published schema.
fn attribute(name: &str, kind: &str, multi: bool, required: bool, extra: Value) -> Value {
    let mut attribute = serde_json::json!({
        "name": name,
        "type": kind,
        "multiValued": multi,
        "description": name,
        "required": required,
        "caseExact": false,
        "mutability": "readWrite",
        "returned": "default",
        "uniqueness": "none",
    });
    if let (Value::Object(attribute), Value::Object(extra)) = (&mut attribute, extra) {
        attribute.extend(extra);
    }
    attribute
}

fn string(name: &str) -> Value {
    attribute(name, "string", false, false, Value::Null)
}

fn schema_resource(id: &str, name: &str, attributes: Vec<Value>) -> Value {
    serde_json::json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Schema"],
        "id": id,
        "name": name,
        "description": name,
        "attributes": attributes,
        "meta": {"resourceType": "Schema", "location": format!("/scim/v2/Schemas/{id}")},
    })
}

/// The schemas this endpoint publishes: what it keeps and answers with. The User attributes
/// are those Entra's default mapping sends and the mirror reads, and a few Entra commonly
/// maps besides; anything else a client sends is kept and answered as sent.
pub fn schema_definitions() -> Vec<Value> {
    let email_types = serde_json::json!({"canonicalValues": ["work", "home", "other"]});
    let user = schema_resource(
        USER_SCHEMA,
        "User",
        vec![
            attribute(
                "userName",
                "string",
                false,
                true,
                serde_json::json!({"uniqueness": "server"}),
            ),
            attribute(
                "name",
                "complex",
                false,
                false,
                serde_json::json!({"subAttributes": [
                    string("formatted"), string("familyName"), string("givenName")
                ]}),
            ),
            string("displayName"),
            string("title"),
            string("userType"),
            string("preferredLanguage"),
            attribute("active", "boolean", false, false, Value::Null),
            attribute(
                "emails",
                "complex",
                true,
                false,
                serde_json::json!({"subAttributes": [
                    string("value"),
                    attribute("type", "string", false, false, email_types),
                    attribute("primary", "boolean", false, false, Value::Null),
                ]}),
            ),
        ],
    );
    let enterprise = schema_resource(
        ENTERPRISE_SCHEMA,
        "EnterpriseUser",
        vec![
            string("employeeNumber"),
            string("department"),
            string("costCenter"),
            string("organization"),
            string("division"),
        ],
    );
    let group = schema_resource(
        GROUP_SCHEMA,
        "Group",
        vec![
            attribute(
                "displayName",
                "string",
                false,
                true,
                serde_json::json!({"uniqueness": "server"}),
            ),
            attribute(
                "members",
                "complex",
                true,
                false,
                serde_json::json!({"subAttributes": [
                    attribute("value", "string", false, false, serde_json::json!({"mutability": "immutable"})),
                    attribute("type", "string", false, false, serde_json::json!({"canonicalValues": ["User"], "mutability": "immutable"})),
                ]}),
            ),
        ],
    );
    vec![user, enterprise, group]
}

/// The resource types this endpoint serves.
pub fn resource_type_definitions() -> Vec<Value> {
    vec![
        serde_json::json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
            "id": "User",
            "name": "User",
            "endpoint": "/Users",
            "description": "Directory users, mirrored for import",
            "schema": USER_SCHEMA,
            "schemaExtensions": [{"schema": ENTERPRISE_SCHEMA, "required": false}],
            "meta": {"resourceType": "ResourceType", "location": "/scim/v2/ResourceTypes/User"},
        }),
        serde_json::json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
            "id": "Group",
            "name": "Group",
            "endpoint": "/Groups",
            "description": "Directory groups, for the group-to-role rules",
            "schema": GROUP_SCHEMA,
            "meta": {"resourceType": "ResourceType", "location": "/scim/v2/ResourceTypes/Group"},
        }),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user(body: Value) -> Map<String, Value> {
        normalize(Kind::User, body).unwrap().0
    }

    fn entra_user() -> Map<String, Value> {
        user(json!({
            "schemas": [USER_SCHEMA, ENTERPRISE_SCHEMA],
            "externalId": "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef",
            "userName": "Test_User@contoso.com",
            "active": true,
            "emails": [{"primary": true, "type": "work", "value": "test.user@contoso.com"}],
            "meta": {"resourceType": "User"},
            "name": {"formatted": "Given Family", "familyName": "Family", "givenName": "Given"},
            "roles": []
        }))
    }

    fn patch(ops: Value) -> Value {
        json!({"schemas": [PATCH_SCHEMA], "Operations": ops})
    }

    #[test]
    fn entras_create_body_maps_onto_the_mirror_fields() {
        let fields = user_fields(&entra_user()).unwrap();
        assert_eq!(fields.user_name, "Test_User@contoso.com");
        assert_eq!(
            fields.external_id.as_deref(),
            Some("0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef")
        );
        assert_eq!(fields.mail.as_deref(), Some("test.user@contoso.com"));
        assert_eq!(fields.display_name.as_deref(), Some("Given Family"));
        assert_eq!(
            (fields.given_name.as_deref(), fields.surname.as_deref()),
            (Some("Given"), Some("Family"))
        );
        assert!(fields.active);
        assert!(!entra_user().contains_key("meta"), "meta is the server's");
    }

    #[test]
    fn a_body_without_the_core_schema_or_with_an_unknown_one_is_refused() {
        let missing = normalize(
            Kind::User,
            json!({"schemas": [ENTERPRISE_SCHEMA], "userName": "a"}),
        );
        assert_eq!(missing.unwrap_err().scim_type, Some("invalidSyntax"));
        let unknown = normalize(
            Kind::User,
            json!({"schemas": [USER_SCHEMA, "urn:x:evil"], "userName": "a"}),
        );
        assert_eq!(unknown.unwrap_err().scim_type, Some("invalidValue"));
        let no_name = normalize(Kind::User, json!({"schemas": [USER_SCHEMA]}));
        assert_eq!(no_name.unwrap_err().detail, "userName is required");
        assert_eq!(normalize(Kind::User, json!([1])).unwrap_err().status, 400);
    }

    #[test]
    fn entras_disable_patch_with_the_string_false_and_a_capitalised_op_disables() {
        let mut u = entra_user();
        apply_patch(
            Kind::User,
            &mut u,
            &patch(json!([{"op": "Replace", "path": "active", "value": "False"}])),
        )
        .unwrap();
        assert_eq!(u["active"], json!(false));
        assert!(!user_fields(&u).unwrap().active);
        let mut u = entra_user();
        apply_patch(
            Kind::User,
            &mut u,
            &patch(json!([{"op": "replace", "value": {"active": false}}])),
        )
        .unwrap();
        assert_eq!(u["active"], json!(false));
    }

    #[test]
    fn patch_paths_reach_sub_attributes_filtered_elements_and_the_enterprise_extension() {
        let mut u = entra_user();
        let ops = json!([
            {"op": "Replace", "path": "name.givenName", "value": "Ann"},
            {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "ann@contoso.com"},
            {"op": "Add", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department", "value": "Sales"},
            {"op": "Add", "value": {"displayName": "Ann Family", "name.familyName": "Family2"}},
            {"op": "Remove", "path": "roles"}
        ]);
        apply_patch(Kind::User, &mut u, &patch(ops)).unwrap();
        let fields = user_fields(&u).unwrap();
        assert_eq!(fields.given_name.as_deref(), Some("Ann"));
        assert_eq!(fields.surname.as_deref(), Some("Family2"));
        assert_eq!(fields.mail.as_deref(), Some("ann@contoso.com"));
        assert_eq!(fields.display_name.as_deref(), Some("Ann Family"));
        assert_eq!(u[ENTERPRISE_SCHEMA]["department"], json!("Sales"));
        assert!(!u.contains_key("roles"));
    }

    #[test]
    fn adding_a_filtered_element_that_is_missing_creates_it() {
        let mut u = user(json!({"schemas": [USER_SCHEMA], "userName": "a"}));
        let ops = json!([{"op": "Add", "path": "emails[type eq \"work\"].value", "value": "a@contoso.com"}]);
        apply_patch(Kind::User, &mut u, &patch(ops)).unwrap();
        assert_eq!(
            u["emails"],
            json!([{"type": "work", "value": "a@contoso.com"}])
        );
    }

    #[test]
    fn a_bad_operation_fails_the_whole_patch_with_its_scim_type() {
        let mut u = entra_user();
        let before = u.clone();
        let bad_op = apply_patch(
            Kind::User,
            &mut u,
            &patch(json!([{"op": "Merge", "path": "active", "value": true}])),
        );
        assert_eq!(bad_op.unwrap_err().scim_type, Some("invalidSyntax"));
        let bad_path = apply_patch(
            Kind::User,
            &mut u,
            &patch(json!([{"op": "Replace", "path": "emails[type eq", "value": 1}])),
        );
        assert_eq!(bad_path.unwrap_err().scim_type, Some("invalidPath"));
        let id = apply_patch(
            Kind::User,
            &mut u,
            &patch(json!([{"op": "Replace", "path": "id", "value": "x"}])),
        );
        assert_eq!(id.unwrap_err().scim_type, Some("mutability"));
        let no_schema = apply_patch(Kind::User, &mut u, &json!({"Operations": []}));
        assert_eq!(no_schema.unwrap_err().scim_type, Some("invalidSyntax"));
        let no_name = apply_patch(
            Kind::User,
            &mut u,
            &patch(json!([{"op": "Remove", "path": "userName"}])),
        );
        assert_eq!(no_name.unwrap_err().scim_type, Some("invalidValue"));
        assert_eq!(u, before, "a failed patch leaves the resource as it was");
    }

    #[test]
    fn group_member_operations_come_out_in_every_shape_entra_sends() {
        let (mut g, members) = normalize(
            Kind::Group,
            json!({"schemas": [GROUP_SCHEMA], "displayName": "Sales", "members": [{"value": "a"}, {"value": "b"}]}),
        )
        .unwrap();
        assert_eq!(members, Some(vec!["a".to_owned(), "b".to_owned()]));
        assert!(!g.contains_key("members"));
        let ops = json!([
            {"op": "Add", "path": "members", "value": [{"value": "c"}, {"value": "d"}]},
            {"op": "Remove", "path": "members", "value": [{"value": "a"}]},
            {"op": "remove", "path": "members[value eq \"b\" or value eq \"c\"]"},
            {"op": "Replace", "path": "displayName", "value": "Sales EU"},
            {"op": "Remove", "path": "members"}
        ]);
        let member_ops = apply_patch(Kind::Group, &mut g, &patch(ops)).unwrap();
        assert_eq!(
            member_ops,
            vec![
                MemberOp::Add(vec!["c".into(), "d".into()]),
                MemberOp::Remove(vec!["a".into()]),
                MemberOp::Remove(vec!["b".into(), "c".into()]),
                MemberOp::Replace(vec![]),
            ]
        );
        assert_eq!(g["displayName"], json!("Sales EU"));
        let bad = apply_patch(
            Kind::Group,
            &mut g,
            &patch(json!([{"op": "Remove", "path": "members[display eq \"x\"]"}])),
        );
        assert_eq!(bad.unwrap_err().scim_type, Some("invalidFilter"));
    }

    #[test]
    fn filters_match_without_case_except_on_ids_and_injections_do_not_parse() {
        let mut u = entra_user();
        u.insert("id".into(), json!("abc"));
        let f = |text: &str| matches(&u, &parse_filter(text).unwrap());
        assert!(f(r#"userName eq "test_user@CONTOSO.com""#));
        assert!(f(
            r#"externalId eq "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef" and active eq true"#
        ));
        assert!(!f(r#"id eq "ABC""#));
        assert!(f(r#"emails[type eq "work" and value sw "test"]"#));
        assert!(f(r#"name.familyName co "amil""#));
        assert!(!f(r#"userName ne "test_user@contoso.com""#));
        assert!(
            f("title ne \"x\""),
            "an absent attribute is not equal to anything"
        );
        assert!(!f("title pr"));
        for injection in [
            r#"userName eq "x" or 1 eq 1"#,
            r#"userName eq "x"; DROP TABLE users"#,
            "userName eq",
            "(",
        ] {
            assert_eq!(
                parse_filter(injection).unwrap_err().scim_type,
                Some("invalidFilter"),
                "{injection}"
            );
        }
    }

    #[test]
    fn an_equality_on_an_indexed_attribute_becomes_the_lookup() {
        let lookup = |text: &str| lookup_of(Kind::User, &parse_filter(text).unwrap());
        assert_eq!(
            lookup(r#"userName eq "a""#),
            Some(Lookup::UniqueName("a".into()))
        );
        assert_eq!(
            lookup(r#"active eq true and externalId eq "x""#),
            Some(Lookup::ExternalId("x".into()))
        );
        assert_eq!(lookup(r#"userName eq "a" or userName eq "b""#), None);
        assert_eq!(
            lookup_of(Kind::Group, &parse_filter(r#"displayName eq "g""#).unwrap()),
            Some(Lookup::UniqueName("g".into()))
        );
    }

    #[test]
    fn projection_keeps_asked_attributes_and_drops_excluded_ones() {
        let mut u = entra_user();
        u.insert("id".into(), json!("abc"));
        u.insert(
            ENTERPRISE_SCHEMA.into(),
            json!({"department": "Sales", "employeeNumber": "7"}),
        );
        let mut only = u.clone();
        project(
            &mut only,
            &[
                "userName".into(),
                "name.givenName".into(),
                format!("{ENTERPRISE_SCHEMA}:department"),
            ],
            &[],
        );
        assert_eq!(
            Value::Object(only),
            json!({"id": "abc", "schemas": [USER_SCHEMA, ENTERPRISE_SCHEMA], "userName": "Test_User@contoso.com", "name": {"givenName": "Given"}, ENTERPRISE_SCHEMA: {"department": "Sales"}})
        );
        let mut without = u.clone();
        project(
            &mut without,
            &[],
            &["emails".into(), "name.formatted".into()],
        );
        assert!(!without.contains_key("emails"));
        assert_eq!(
            without["name"],
            json!({"familyName": "Family", "givenName": "Given"})
        );
        assert_eq!(without["id"], json!("abc"));
    }

    #[test]
    fn an_error_body_carries_the_status_as_a_string_and_the_scim_type() {
        let body = ScimError::uniqueness("userName \"a\" is taken").body();
        assert_eq!(
            body,
            json!({"schemas": [ERROR_SCHEMA], "status": "409", "scimType": "uniqueness", "detail": "userName \"a\" is taken"})
        );
    }
}
