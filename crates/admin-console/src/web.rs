//! The web layer: routes, the page frame, errors as pages, security headers and metrics.

use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{DOCTYPE, Markup, html};

use crate::session::{CSRF_FIELD, Person};
use crate::{AppState, pages};

pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/import") }))
        .route("/healthz", get(|| async { "ok" }))
        .route("/assets/console.js", get(script))
        .route("/assets/console.css", get(style))
        .route(
            "/sign-in",
            get(pages::sign_in::page).post(pages::sign_in::with_token),
        )
        .route("/sign-in/dev", post(pages::sign_in::as_dev_person))
        .route("/sign-in/oidc", get(pages::sign_in::oidc_start))
        .route("/sign-in/callback", get(pages::sign_in::oidc_callback))
        .route("/sign-out", post(pages::sign_in::sign_out))
        .route("/company", post(pages::company::change))
        .route("/import", get(pages::import::page).post(pages::import::run))
        .route("/batch", get(pages::batch::page).post(pages::batch::start))
        .route("/jobs", get(pages::jobs::list))
        .route("/jobs/{job_id}", get(pages::jobs::page))
        .route("/jobs/{job_id}/events", get(pages::jobs::events))
        .route("/jobs/{job_id}/{action}", post(pages::jobs::act))
        .route("/jobs/{job_id}/outcomes.csv", get(pages::jobs::csv))
        .route("/users", get(pages::users::list))
        .route("/users/{user_id}", get(pages::users::page))
        .route("/users/{user_id}/roles", post(pages::users::roles))
        .route("/users/{user_id}/enabled", post(pages::users::enabled))
        .route("/users/{user_id}/rename", post(pages::users::rename))
        .route("/sync", get(pages::sync::page))
        .route("/sync/run", post(pages::sync::run))
        .route("/sync/runs/{run_id}", get(pages::sync::run_page))
        .route("/sync/runs/{run_id}/approve", post(pages::sync::approve))
        .route("/sync/runs/{run_id}/reject", post(pages::sync::reject))
        .route("/rules", get(pages::rules::page).post(pages::rules::add))
        .route("/rules/{rule_id}/remove", post(pages::rules::remove))
        .layer(axum::middleware::from_fn(measured))
        .layer(axum::middleware::from_fn(secured))
        .with_state(state)
}

async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../assets/console.js"),
    )
}

async fn style() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../assets/console.css"),
    )
}

/// Headers every answer carries: only our own script and style run (no inline code, so an
/// injected attribute runs nothing), no framing, no sniffing, no referrer off-site.
async fn secured(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// `http_server_requests_total{route, method, status}` and `http_server_request_seconds{route}`,
/// labelled by the route's pattern (never the raw path, so a caller cannot grow the label set).
async fn measured(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("http_server_requests_total", "route" => route.clone(), "method" => method, "status" => status)
        .increment(1);
    metrics::histogram!("http_server_request_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Why a page could not be shown, shown as a page.
#[derive(Debug)]
pub(crate) enum PageError {
    /// Not signed in (or the session ended): to the sign-in page, then back here.
    SignIn(String),
    Forbidden(String),
    BadRequest(String),
    NotFound(String),
    /// A service's answer.
    Status(tonic::Status),
    Internal(anyhow::Error),
}

impl From<tonic::Status> for PageError {
    fn from(status: tonic::Status) -> Self {
        Self::Status(status)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (code, message) = match self {
            PageError::SignIn(next) => {
                let next: String = url::form_urlencoded::byte_serialize(next.as_bytes()).collect();
                return Redirect::to(&format!("/sign-in?next={next}")).into_response();
            }
            PageError::Forbidden(m) => (StatusCode::FORBIDDEN, m),
            PageError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            PageError::NotFound(m) => (StatusCode::NOT_FOUND, m),
            PageError::Status(status) => {
                use tonic::Code;
                let code = match status.code() {
                    Code::Unauthenticated => {
                        return Redirect::to("/sign-in?expired=1").into_response();
                    }
                    Code::PermissionDenied => StatusCode::FORBIDDEN,
                    Code::NotFound => StatusCode::NOT_FOUND,
                    Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
                    Code::AlreadyExists | Code::FailedPrecondition | Code::Aborted => {
                        StatusCode::CONFLICT
                    }
                    Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted => {
                        StatusCode::SERVICE_UNAVAILABLE
                    }
                    _ => StatusCode::BAD_GATEWAY,
                };
                let message = if code == StatusCode::SERVICE_UNAVAILABLE {
                    // A transport error says only "tcp connect error": say what it means.
                    format!(
                        "a service this page calls did not answer ({}); try again in a moment, \
                         and if it lasts, check the health of directory-sync, user-registry and \
                         import-worker",
                        status.message()
                    )
                } else {
                    status.message().to_owned()
                };
                (code, message)
            }
            PageError::Internal(error) => {
                tracing::error!(error = format!("{error:#}"), "a page failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the console failed to answer; its log says why".to_owned(),
                )
            }
        };
        let body = html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { "Error – userimport" }
                    link rel="stylesheet" href="/assets/console.css";
                }
                body {
                    main id="main" {
                        h1 { (code.canonical_reason().unwrap_or("Error")) }
                        p role="alert" class="error" { (message) }
                        p { a href="/import" { "Import users" } " · " a href="/jobs" { "Jobs" } " · " a href="/sign-in" { "Sign in" } }
                    }
                }
            }
        };
        (code, body).into_response()
    }
}

pub(crate) type PageResult = Result<Response, PageError>;

/// The navigation, in D365's order.
const NAV: &[(&str, &str)] = &[
    ("/import", "Import users"),
    ("/batch", "Batch import"),
    ("/jobs", "Jobs"),
    ("/users", "Users"),
    ("/sync", "Sync"),
    ("/rules", "Rules"),
];

/// A page in the console's frame: skip link, navigation, the current company (changeable)
/// and who is signed in.
pub(crate) fn frame(person: &Person, companies: &[String], title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " – userimport" }
                link rel="stylesheet" href="/assets/console.css";
                script src="/assets/console.js" defer {}
            }
            body {
                a class="skip" href="#main" { "Skip to content" }
                header class="top" {
                    span class="brand" { "userimport" }
                    nav aria-label="Main" {
                        ul {
                            @for (href, label) in NAV {
                                li {
                                    @if *label == title {
                                        a href=(href) aria-current="page" { (label) }
                                    } @else {
                                        a href=(href) { (label) }
                                    }
                                }
                            }
                        }
                    }
                    form class="company" method="post" action="/company" {
                        (csrf(person))
                        label for="current-company" { "Company" }
                        select id="current-company" name="company" data-autosubmit {
                            @for code in companies {
                                option value=(code) selected[*code == person.company] { (code) }
                            }
                            @if !companies.contains(&person.company) {
                                option value=(person.company) selected { (person.company) }
                            }
                        }
                        button type="submit" class="secondary" { "Change" }
                    }
                    form class="who" method="post" action="/sign-out" {
                        (csrf(person))
                        span { (person.principal) " (" (if person.can_write() { "administrator" } else { "reader" }) ")" }
                        button type="submit" class="secondary" { "Sign out" }
                    }
                }
                main id="main" tabindex="-1" {
                    (body)
                }
            }
        }
    }
}

/// The hidden CSRF field every form of ours carries.
pub(crate) fn csrf(person: &Person) -> Markup {
    html! { input type="hidden" name=(CSRF_FIELD) value=(person.csrf); }
}

/// Milliseconds since the epoch as `2026-12-06 18:41 UTC`; empty for 0.
pub(crate) fn when(ms: i64) -> String {
    if ms <= 0 {
        return String::new();
    }
    let format =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_default()
}

/// A query-string value, encoded.
pub(crate) fn enc(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}
