//! The current company: where imports go and whose roles the Users page assigns, per person.

use axum::http::header;
use axum::response::{IntoResponse as _, Redirect};

use crate::AppState;
use crate::session::Form;
use crate::web::{PageError, PageResult};

pub(crate) async fn change(
    axum::extract::State(state): axum::extract::State<AppState>,
    headers: axum::http::HeaderMap,
    form: Form,
) -> PageResult {
    let company = form.text("company");
    let known = super::companies(&state, &form.person).await?;
    if !known.contains(&company) {
        return Err(PageError::BadRequest(format!(
            "no company {company:?} in the registry"
        )));
    }
    state
        .sessions
        .set_company(&form.person.session_id, &company);
    // Back to the page the selector was on (same origin only).
    let back = headers
        .get(header::REFERER)
        .and_then(|v| v.to_str().ok())
        .and_then(|r| url::Url::parse(r).ok())
        .map(|u| match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_owned(),
        })
        .filter(|p| p.starts_with('/') && !p.starts_with("//"))
        .unwrap_or_else(|| "/import".to_owned());
    Ok(Redirect::to(&back).into_response())
}
