//! One module per page of the console, in D365's order.

use maud::Markup;

use crate::AppState;
use crate::session::Person;
use crate::web::{PageError, frame};

pub(crate) mod batch;
pub(crate) mod company;
pub(crate) mod import;
pub(crate) mod jobs;
pub(crate) mod rules;
pub(crate) mod sign_in;
pub(crate) mod sync;
pub(crate) mod users;

/// `body` in the console's frame, with the registry's companies in the company selector.
pub(crate) async fn framed(
    state: &AppState,
    person: &Person,
    title: &str,
    body: Markup,
) -> Result<Markup, PageError> {
    let companies = companies(state, person).await?;
    Ok(frame(person, &companies, title, body))
}

/// The registry's company codes.
pub(crate) async fn companies(state: &AppState, person: &Person) -> Result<Vec<String>, PageError> {
    Ok(state
        .services
        .registry(person)?
        .list_companies(proto::registry::v1::ListCompaniesRequest {})
        .await?
        .into_inner()
        .companies
        .into_iter()
        .map(|c| c.code)
        .collect())
}

/// A query parameter's value: the last one given, empty when absent.
pub(crate) fn param<'a>(query: &'a [(String, String)], name: &str) -> &'a str {
    query
        .iter()
        .rev()
        .find(|(key, _)| key == name)
        .map_or("", |(_, value)| value.as_str())
}

/// The request's query as pairs (a name may repeat).
pub(crate) type Query = axum::extract::Query<Vec<(String, String)>>;
