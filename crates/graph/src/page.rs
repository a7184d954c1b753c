//! Tolerant parsing of collection pages: one bad entry never costs the rest of its page.
//!
//! The page is first split into raw entries (`RawValue`), which only checks JSON syntax
//! (a lone UTF-16 surrogate such as `"\ud800"` passes there), and each entry is then parsed
//! on its own; an entry that fails is rejected with the reason and the others are kept.

use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::Error;
use crate::users::{GraphUser, RejectedUser};

/// A page split into its parts, entries already judged by the caller's entry parser.
#[derive(Debug)]
pub(crate) struct Parsed<E> {
    pub(crate) entries: Vec<E>,
    pub(crate) next_link: Option<String>,
    pub(crate) delta_link: Option<String>,
    pub(crate) count: Option<u64>,
}

#[derive(Deserialize)]
struct RawPage<'a> {
    #[serde(borrow)]
    value: Option<Vec<&'a RawValue>>,
    #[serde(rename = "@odata.nextLink")]
    next_link: Option<String>,
    #[serde(rename = "@odata.deltaLink")]
    delta_link: Option<String>,
    #[serde(rename = "@odata.count")]
    count: Option<u64>,
}

/// Splits a collection page; fails with [`Error::Decode`] only if the page itself is broken
/// (not JSON, no `value` array, a broken link).
pub(crate) fn parse_page<E>(
    body: &[u8],
    what: &str,
    entry: impl Fn(&RawValue) -> E,
) -> Result<Parsed<E>, Error> {
    let raw: RawPage<'_> = serde_json::from_slice(body)
        .map_err(|e| Error::Decode(format!("{what} page is not valid JSON: {e}")))?;
    let value = raw
        .value
        .ok_or_else(|| Error::Decode(format!("{what} page has no `value` array")))?;
    Ok(Parsed {
        entries: value.into_iter().map(entry).collect(),
        next_link: raw.next_link,
        delta_link: raw.delta_link,
        count: raw.count,
    })
}

/// An entry parsed as JSON, or rejected (with its id if that much could be read).
pub(crate) fn entry_value(raw: &RawValue) -> Result<Value, RejectedUser> {
    serde_json::from_str::<Value>(raw.get()).map_err(|e| RejectedUser {
        id: tolerant_id(raw),
        reason: format!("entry is not valid JSON: {e}"),
    })
}

/// Reads only `id` from an entry whose other parts may be broken.
fn tolerant_id(raw: &RawValue) -> Option<String> {
    #[derive(Deserialize)]
    struct IdOnly<'a> {
        #[serde(borrow)]
        id: Option<&'a RawValue>,
    }
    let id = serde_json::from_str::<IdOnly<'_>>(raw.get()).ok()?.id?;
    serde_json::from_str::<String>(id.get()).ok()
}

/// The `@odata.type` of an entry, if it names one.
pub(crate) fn odata_type(entry: &Value) -> Option<&str> {
    entry.get("@odata.type").and_then(Value::as_str)
}

/// The OData type of a user.
pub(crate) const USER_TYPE: &str = "#microsoft.graph.user";

/// A `/users` entry: a user, or a rejection (also for another `@odata.type`).
pub(crate) fn user_entry(raw: &RawValue) -> Result<GraphUser, RejectedUser> {
    GraphUser::try_from(entry_value(raw)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn users_page(body: &[u8]) -> Result<Parsed<Result<GraphUser, RejectedUser>>, Error> {
        parse_page(body, "users", user_entry)
    }

    #[test]
    fn a_lone_surrogate_rejects_only_its_entry() {
        let body = br#"{"value":[
            {"id":"a","userPrincipalName":"a@contoso.com"},
            {"id":"b","userPrincipalName":"b@contoso.com","displayName":"bad \ud800 name"},
            {"id":"c","userPrincipalName":"c@contoso.com","displayName":"pair \ud83d\ude00 ok"}
        ]}"#;
        // serde_json refuses the whole document when parsed at once.
        assert!(serde_json::from_slice::<Value>(body).is_err());
        let page = users_page(body).unwrap();
        assert_eq!(page.entries.len(), 3);
        assert_eq!(page.entries[0].as_ref().unwrap().id, "a");
        let rejected = page.entries[1].as_ref().unwrap_err();
        assert_eq!(rejected.id.as_deref(), Some("b"));
        assert!(rejected.reason.contains("not valid JSON"), "{rejected:?}");
        assert_eq!(
            page.entries[2].as_ref().unwrap().display_name.as_deref(),
            Some("pair 😀 ok")
        );
    }

    #[test]
    fn a_surrogate_in_the_id_itself_rejects_without_an_id() {
        let body = br#"{"value":[{"id":"\udc00","userPrincipalName":"x@contoso.com"}]}"#;
        let page = users_page(body).unwrap();
        assert_eq!(page.entries[0].as_ref().unwrap_err().id, None);
    }

    #[test]
    fn a_huge_display_name_is_accepted() {
        let name = "N".repeat(100 * 1024);
        let body = serde_json::to_vec(&serde_json::json!({"value":[
            {"id":"a","userPrincipalName":"a@contoso.com","displayName": name}
        ]}))
        .unwrap();
        let page = users_page(&body).unwrap();
        assert_eq!(
            page.entries[0]
                .as_ref()
                .unwrap()
                .display_name
                .as_ref()
                .unwrap()
                .len(),
            100 * 1024
        );
    }

    #[test]
    fn another_odata_type_is_rejected_and_the_user_type_accepted() {
        let body = br##"{"value":[
            {"@odata.type":"#microsoft.graph.group","id":"g","userPrincipalName":"g@contoso.com"},
            {"@odata.type":"#microsoft.graph.user","id":"u","userPrincipalName":"u@contoso.com"}
        ]}"##;
        let page = users_page(body).unwrap();
        let rejected = page.entries[0].as_ref().unwrap_err();
        assert!(rejected.reason.contains("@odata.type"), "{rejected:?}");
        assert_eq!(page.entries[1].as_ref().unwrap().id, "u");
    }

    #[test]
    fn broken_pages_are_decode_errors() {
        for body in [
            &b"{\"value\":[{\"id\":"[..],
            b"<html>",
            b"",
            b"{\"value\":{}}",
            b"{\"value\":null}",
            b"[]",
        ] {
            assert!(
                matches!(users_page(body), Err(Error::Decode(_))),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            ".*".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("id".to_owned()),
                        Just("userPrincipalName".to_owned()),
                        Just("@odata.type".to_owned()),
                        Just("accountEnabled".to_owned()),
                        ".*"
                    ],
                    inner,
                    0..6
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn user() -> impl Strategy<Value = GraphUser> {
        (
            "[a-zA-Z0-9-]{1,36}",
            "\\PC{1,40}",
            proptest::option::of("\\PC{0,40}"),
            proptest::option::of("\\PC{0,200}"),
            proptest::option::of("\\PC{0,20}"),
            proptest::option::of("\\PC{0,20}"),
            proptest::option::of(any::<bool>()),
            proptest::option::of(prop_oneof![
                Just("Member".to_owned()),
                Just("Guest".to_owned())
            ]),
        )
            .prop_filter("non-blank keys", |u| {
                !u.0.trim().is_empty() && !u.1.trim().is_empty()
            })
            .prop_map(
                |(id, upn, mail, display_name, given_name, surname, account_enabled, user_type)| {
                    GraphUser {
                        id,
                        user_principal_name: upn,
                        mail,
                        display_name,
                        given_name,
                        surname,
                        account_enabled,
                        user_type,
                    }
                },
            )
    }

    fn to_json(user: &GraphUser) -> Value {
        serde_json::json!({
            "id": user.id,
            "userPrincipalName": user.user_principal_name,
            "mail": user.mail,
            "displayName": user.display_name,
            "givenName": user.given_name,
            "surname": user.surname,
            "accountEnabled": user.account_enabled,
            "userType": user.user_type,
        })
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = users_page(&body);
        }

        #[test]
        fn arbitrary_json_entries_never_panic_and_each_is_judged(
            entries in prop::collection::vec(json_value(), 0..8),
            next in proptest::option::of(".*"),
        ) {
            let body = serde_json::to_vec(&serde_json::json!({
                "value": entries, "@odata.nextLink": next,
            })).unwrap();
            let page = users_page(&body).unwrap();
            prop_assert_eq!(page.entries.len(), entries.len());
        }

        #[test]
        fn arbitrary_text_spliced_into_a_page_never_panics(text in "[^\"\\\\]*", escape in "\\\\u[0-9a-fA-F]{4}") {
            let body = format!(
                r#"{{"value":[{{"id":"x","userPrincipalName":"a{escape}{text}"}},{{"id":"y","userPrincipalName":"y@c"}}]}}"#
            );
            if let Ok(page) = users_page(body.as_bytes()) {
                prop_assert_eq!(page.entries.len(), 2);
                prop_assert!(page.entries[1].is_ok());
            }
        }

        #[test]
        fn well_formed_users_round_trip(users in prop::collection::vec(user(), 0..10)) {
            let body = serde_json::to_vec(&serde_json::json!({
                "value": users.iter().map(to_json).collect::<Vec<_>>(),
            })).unwrap();
            let page = users_page(&body).unwrap();
            let parsed: Vec<GraphUser> = page.entries.into_iter().map(Result::unwrap).collect();
            prop_assert_eq!(parsed, users);
        }
    }
}
