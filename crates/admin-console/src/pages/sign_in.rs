//! Sign-in: an access token verified exactly as the services verify it (so the console knows
//! the person and their roles), kept in a server-side session; in `userimport dev`, one
//! button per local person. Sign-in forms are tied to the browser that loaded them by a
//! cookie of their own (login CSRF).

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse as _, Redirect, Response};
use maud::{DOCTYPE, html};
use secrecy::{ExposeSecret as _, SecretString};
use service_runtime::auth::PRINCIPAL_HEADER;

use super::{Query, param};
use crate::AppState;
use crate::session::{self, COOKIE, Form, SIGN_IN_COOKIE, cookie, random, same_secret, set_cookie};
use crate::web::{PageError, PageResult};

/// Only a path of this console: never an open redirect to another site.
fn local_path(next: &str) -> String {
    if next.starts_with('/') && !next.starts_with("//") && !next.starts_with("/\\") {
        next.to_owned()
    } else {
        "/import".to_owned()
    }
}

/// `response` setting each of `cookies` (`Set-Cookie` values).
fn with_cookies<const N: usize>(
    mut response: Response,
    cookies: [String; N],
) -> Result<Response, PageError> {
    for value in cookies {
        let value = HeaderValue::from_str(&value).map_err(|e| PageError::Internal(e.into()))?;
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    Ok(response)
}

pub(crate) async fn page(
    State(state): State<AppState>,
    axum::extract::Query(query): Query,
) -> PageResult {
    let binding = random().map_err(PageError::Internal)?;
    let next = local_path(param(&query, "next"));
    let sign_in = &state.config.sign_in;
    let body = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Sign in – userimport" }
                link rel="stylesheet" href="/assets/console.css";
            }
            body {
                main id="main" class="narrow" {
                    h1 { "Sign in to userimport" }
                    @if !param(&query, "expired").is_empty() {
                        p role="alert" class="notice" { "Your session has ended or your token is no longer accepted. Sign in again." }
                    }
                    @if let Some(message) = query.iter().find(|(k, _)| k == "error").map(|(_, v)| v) {
                        p role="alert" class="error" { (message) }
                    }
                    @if sign_in.oidc.is_some() {
                        p {
                            a class="button" id="sign-in-oidc" href=(format!("/sign-in/oidc?next={}", crate::web::enc(&next))) {
                                "Sign in with your organization account"
                            }
                        }
                    }
                    @if !sign_in.dev_people.is_empty() {
                        h2 { "People of this development stack" }
                        ul class="people" {
                            @for person in &sign_in.dev_people {
                                li {
                                    form method="post" action="/sign-in/dev" {
                                        input type="hidden" name="sign_in" value=(binding);
                                        input type="hidden" name="next" value=(next);
                                        input type="hidden" name="principal" value=(person.principal);
                                        button type="submit" id=(format!("sign-in-{}", person.principal.replace(|c: char| !c.is_ascii_alphanumeric(), "-"))) {
                                            "Sign in as " (person.principal)
                                        }
                                    }
                                }
                            }
                        }
                    }
                    @if sign_in.token_form {
                        h2 { "With an access token" }
                        form method="post" action="/sign-in" {
                            input type="hidden" name="sign_in" value=(binding);
                            input type="hidden" name="next" value=(next);
                            div class="field" {
                                label for="token" { "Access token for the userimport API" }
                                input type="password" id="token" name="token" autocomplete="off" required;
                            }
                            button type="submit" { "Sign in" }
                        }
                    }
                }
            }
        }
    };
    let response = body.into_response();
    let cookie = set_cookie(SIGN_IN_COOKIE, &binding, 600, state.config.secure_cookies);
    with_cookies(response, [cookie])
}

/// The posted sign-in form's fields, when the form came from this browser's sign-in page.
fn sign_in_fields(headers: &HeaderMap, body: &[u8]) -> Result<Vec<(String, String)>, PageError> {
    let fields: Vec<(String, String)> = url::form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let field = fields
        .iter()
        .find(|(k, _)| k == "sign_in")
        .map(|(_, v)| v.as_str());
    match (cookie(headers, SIGN_IN_COOKIE), field) {
        (Some(a), Some(b)) if same_secret(a, b) => Ok(fields),
        _ => Err(PageError::Forbidden(
            "this sign-in form did not come from this browser's sign-in page; open the sign-in \
             page again"
                .to_owned(),
        )),
    }
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> &'a str {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map_or("", |(_, v)| v.as_str())
}

/// Verifies `token` as the services would and opens a session for its principal.
async fn open_session(
    state: &AppState,
    token: Option<SecretString>,
    claimed: Option<&str>,
    next: &str,
) -> PageResult {
    let mut headers = HeaderMap::new();
    if let Some(token) = &token {
        let value = HeaderValue::from_str(&format!("Bearer {}", token.expose_secret()))
            .map_err(|_| PageError::BadRequest("that is not a token".to_owned()))?;
        headers.insert(header::AUTHORIZATION, value);
    }
    if let Some(name) = claimed
        && let Ok(value) = HeaderValue::from_str(name)
    {
        headers.insert(PRINCIPAL_HEADER, value);
    }
    let principal = state
        .authenticator
        .authenticate(&headers)
        .await
        .map_err(|status| PageError::Forbidden(format!("not signed in: {}", status.message())))?;
    // The console is for people: a service's token (or one with no role of ours) signs in
    // nobody, so a leaked service token cannot be used through it.
    if principal.is_service()
        || !principal.has_any(&[service_runtime::auth::ADMIN, service_runtime::auth::READER])
    {
        tracing::warn!(
            principal = principal.name,
            "refused a console sign-in without a person's role"
        );
        return Err(PageError::Forbidden(format!(
            "{} is not a person with a role in userimport (administrator or reader): the \
             console signs in people, not services",
            principal.name
        )));
    }
    tracing::info!(principal = principal.name, "signed in to the console");
    let id = state
        .sessions
        .open(principal, token, &state.config.default_company)
        .map_err(PageError::Internal)?;
    let secure = state.config.secure_cookies;
    with_cookies(
        Redirect::to(&local_path(next)).into_response(),
        [
            set_cookie(COOKIE, &id, state.config.session_minutes * 60, secure),
            set_cookie(SIGN_IN_COOKIE, "", 0, secure),
        ],
    )
}

pub(crate) async fn with_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> PageResult {
    if !state.config.sign_in.token_form {
        return Err(PageError::NotFound("no token sign-in here".to_owned()));
    }
    let fields = sign_in_fields(&headers, &body)?;
    let token = field(&fields, "token").trim();
    if token.is_empty() {
        return Err(PageError::BadRequest("paste an access token".to_owned()));
    }
    open_session(
        &state,
        Some(SecretString::from(token.to_owned())),
        None,
        field(&fields, "next"),
    )
    .await
}

pub(crate) async fn as_dev_person(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> PageResult {
    let fields = sign_in_fields(&headers, &body)?;
    let principal = field(&fields, "principal");
    let person = state
        .config
        .sign_in
        .dev_people
        .iter()
        .find(|p| p.principal == principal)
        .ok_or_else(|| PageError::Forbidden(format!("no person {principal:?} here")))?;
    open_session(
        &state,
        person.token.clone(),
        Some(&person.principal),
        field(&fields, "next"),
    )
    .await
}

pub(crate) async fn sign_out(
    State(state): State<AppState>,
    form: Form,
) -> Result<Response, PageError> {
    state.sessions.close(&form.person.session_id);
    let value = session::set_cookie(COOKIE, "", 0, state.config.secure_cookies);
    with_cookies(Redirect::to("/sign-in").into_response(), [value])
}

/// Sends the browser to the identity provider, bound to it by a fresh sign-in cookie.
pub(crate) async fn oidc_start(
    State(state): State<AppState>,
    axum::extract::Query(query): Query,
) -> PageResult {
    let oidc = state
        .oidc
        .as_ref()
        .ok_or_else(|| PageError::NotFound("no OpenID Connect sign-in here".to_owned()))?;
    let binding = random().map_err(PageError::Internal)?;
    let next = local_path(param(&query, "next"));
    let to = oidc.start(&next, &binding).await.map_err(|error| {
        tracing::warn!(error = format!("{error:#}"), "cannot start an OIDC sign-in");
        PageError::Status(tonic::Status::unavailable(format!(
            "the identity provider cannot be reached: {error:#}"
        )))
    })?;
    let response = Redirect::to(&to).into_response();
    let cookie = set_cookie(SIGN_IN_COOKIE, &binding, 600, state.config.secure_cookies);
    with_cookies(response, [cookie])
}

/// Where the identity provider sends the browser back: the code for a token, then a session.
pub(crate) async fn oidc_callback(
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::extract::Query(query): Query,
) -> PageResult {
    let oidc = state
        .oidc
        .as_ref()
        .ok_or_else(|| PageError::NotFound("no OpenID Connect sign-in here".to_owned()))?;
    let refused = |why: String| {
        let why: String = why.chars().take(300).collect();
        Redirect::to(&format!("/sign-in?error={}", crate::web::enc(&why))).into_response()
    };
    if !param(&query, "error").is_empty() {
        return Ok(refused(format!(
            "the identity provider did not sign you in: {} {}",
            param(&query, "error"),
            param(&query, "error_description")
        )));
    }
    let browser = cookie(&headers, SIGN_IN_COOKIE).unwrap_or_default();
    match oidc
        .finish(param(&query, "state"), param(&query, "code"), browser)
        .await
    {
        Ok((token, next)) => open_session(&state, Some(token), None, &next).await,
        Err(error) => Ok(refused(format!("{error:#}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::local_path;

    #[test]
    fn after_sign_in_only_a_path_of_this_console_is_followed() {
        assert_eq!(local_path("/jobs/42?x=1"), "/jobs/42?x=1");
        for elsewhere in [
            "https://evil.example/",
            "//evil.example/",
            "/\\evil.example",
            "jobs",
            "",
        ] {
            assert_eq!(local_path(elsewhere), "/import", "{elsewhere}");
        }
    }
}
