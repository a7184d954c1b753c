//! Sessions: who signed in, with which token, in which company, and the form token that
//! proves a POST came from one of our pages (CSRF). Kept in this process's memory, so a
//! restart signs everyone out and replicas need sticky sessions (ARCHITECTURE.md).

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use secrecy::SecretString;
use service_runtime::auth;

use crate::AppState;
use crate::web::PageError;

/// The session cookie. `__Host-` would pin it to this origin, but needs `Secure`, which a
/// plain-HTTP loopback `userimport dev` cannot set.
pub(crate) const COOKIE: &str = "userimport_session";
/// The cookie that ties a sign-in form to the browser that loaded it (login CSRF).
pub(crate) const SIGN_IN_COOKIE: &str = "userimport_sign_in";
/// The form field carrying the CSRF token.
pub(crate) const CSRF_FIELD: &str = "csrf";

/// A signed-in person, as a page handler sees them.
#[derive(Clone)]
pub(crate) struct Person {
    pub(crate) session_id: String,
    pub(crate) principal: String,
    pub(crate) roles: BTreeSet<String>,
    pub(crate) token: Option<SecretString>,
    pub(crate) csrf: String,
    pub(crate) company: String,
}

impl Person {
    /// Administrators write; readers only read (the services enforce the same).
    pub(crate) fn can_write(&self) -> bool {
        self.roles.contains(auth::ADMIN)
    }

    /// Refuses a write by someone who may only read, before any service is called.
    pub(crate) fn require_writer(&self) -> Result<(), PageError> {
        if self.can_write() {
            Ok(())
        } else {
            Err(PageError::Forbidden(format!(
                "{} may read but not change anything here",
                self.principal
            )))
        }
    }
}

struct Session {
    principal: String,
    roles: BTreeSet<String>,
    token: Option<SecretString>,
    csrf: String,
    company: String,
    expires: Instant,
}

/// Every open session of this process.
pub(crate) struct Sessions {
    open: Mutex<HashMap<String, Session>>,
    lifetime: Duration,
}

impl Sessions {
    pub(crate) fn new(lifetime: Duration) -> Self {
        Self {
            open: Mutex::new(HashMap::new()),
            lifetime,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Opens a session for `principal`; answers its id (the cookie's value).
    pub(crate) fn open(
        &self,
        principal: auth::Principal,
        token: Option<SecretString>,
        company: &str,
    ) -> anyhow::Result<String> {
        let id = random()?;
        let now = Instant::now();
        let mut open = self.lock();
        open.retain(|_, s| s.expires > now);
        open.insert(
            id.clone(),
            Session {
                principal: principal.name,
                roles: principal.roles,
                token,
                csrf: random()?,
                company: company.to_owned(),
                expires: now + self.lifetime,
            },
        );
        Ok(id)
    }

    fn person(&self, id: &str) -> Option<Person> {
        let mut open = self.lock();
        let session = open.get(id)?;
        if session.expires <= Instant::now() {
            open.remove(id);
            return None;
        }
        Some(Person {
            session_id: id.to_owned(),
            principal: session.principal.clone(),
            roles: session.roles.clone(),
            token: session.token.clone(),
            csrf: session.csrf.clone(),
            company: session.company.clone(),
        })
    }

    pub(crate) fn set_company(&self, id: &str, company: &str) {
        if let Some(session) = self.lock().get_mut(id) {
            company.clone_into(&mut session.company);
        }
    }

    pub(crate) fn close(&self, id: &str) {
        self.lock().remove(id);
    }
}

/// 32 random bytes, URL-safe base64.
pub(crate) fn random() -> anyhow::Result<String> {
    use secrecy::ExposeSecret as _;
    Ok(auth::random_token()?.expose_secret().to_owned())
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub(crate) fn cookie<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Lax (a link from elsewhere still opens a page
/// signed in; a form posted from elsewhere carries no cookie), `Secure` when configured.
pub(crate) fn set_cookie(name: &str, value: &str, max_age_secs: u64, secure: bool) -> String {
    format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age_secs}{}",
        if secure { "; Secure" } else { "" }
    )
}

/// Compares two secrets in time independent of where they differ.
pub(crate) fn same_secret(a: &str, b: &str) -> bool {
    let digest = |s: &str| ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
    digest(a).as_ref() == digest(b).as_ref()
}

impl FromRequestParts<AppState> for Person {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, PageError> {
        let next = parts
            .uri
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_owned();
        cookie(&parts.headers, COOKIE)
            .and_then(|id| state.sessions.person(id))
            .ok_or(PageError::SignIn(next))
    }
}

/// A posted form: its fields in order (a field may repeat, as the ticked users do), taken
/// only when it carries the session's CSRF token.
pub(crate) struct Form {
    pub(crate) person: Person,
    fields: Vec<(String, String)>,
}

impl Form {
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// The field's trimmed text, empty when absent.
    pub(crate) fn text(&self, name: &str) -> String {
        self.get(name).unwrap_or_default().trim().to_owned()
    }

    /// A ticked checkbox.
    pub(crate) fn flag(&self, name: &str) -> bool {
        self.get(name).is_some_and(|v| v != "false")
    }

    pub(crate) fn all(&self, name: &str) -> Vec<String> {
        self.fields
            .iter()
            .filter(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
            .collect()
    }
}

/// Forms are small: a page of ticked users at most.
const MAX_FORM_BYTES: usize = 256 * 1024;

impl axum::extract::FromRequest<AppState> for Form {
    type Rejection = PageError;

    async fn from_request(
        request: axum::extract::Request,
        state: &AppState,
    ) -> Result<Self, PageError> {
        let (mut parts, body) = request.into_parts();
        let person = Person::from_request_parts(&mut parts, state).await?;
        let bytes = axum::body::to_bytes(body, MAX_FORM_BYTES)
            .await
            .map_err(|_| PageError::BadRequest("the form is too large".to_owned()))?;
        let fields: Vec<(String, String)> = url::form_urlencoded::parse(&bytes)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let form = Form { person, fields };
        match form.get(CSRF_FIELD) {
            Some(token) if same_secret(token, &form.person.csrf) => Ok(form),
            _ => Err(PageError::Forbidden(
                "this form did not come from a page of this console (its CSRF token is missing \
                 or stale); reload the page and try again"
                    .to_owned(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_found_among_others_and_a_lookalike_name_is_not_taken() {
        let mut headers = axum::http::HeaderMap::new();
        headers.append(
            axum::http::header::COOKIE,
            "theme=dark; userimport_session_old=stale; userimport_session=abc"
                .parse()
                .unwrap_or_else(|_| unreachable!()),
        );
        assert_eq!(cookie(&headers, COOKIE), Some("abc"));
        assert_eq!(cookie(&headers, "missing"), None);
    }

    #[test]
    fn a_cookie_is_http_only_same_site_and_secure_when_asked() {
        let secure = set_cookie(COOKIE, "v", 60, true);
        assert!(secure.contains("HttpOnly") && secure.contains("SameSite=Lax"));
        assert!(secure.ends_with("; Secure"));
        assert!(!set_cookie(COOKIE, "v", 60, false).contains("Secure"));
    }

    #[test]
    fn an_expired_session_lets_nobody_in_and_is_forgotten() {
        let sessions = Sessions::new(Duration::from_millis(0));
        let principal = auth::Principal {
            name: "alice".to_owned(),
            roles: [auth::ADMIN.to_owned()].into(),
        };
        let id = sessions
            .open(principal, None, "DAT")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(sessions.person(&id).is_none());
        assert!(sessions.lock().is_empty());
    }

    #[test]
    fn a_reader_may_not_write_and_an_administrator_may() {
        let sessions = Sessions::new(Duration::from_secs(60));
        let open = |role: &str| {
            let principal = auth::Principal {
                name: role.to_owned(),
                roles: [role.to_owned()].into(),
            };
            let id = sessions
                .open(principal, None, "DAT")
                .unwrap_or_else(|e| panic!("{e}"));
            sessions.person(&id).unwrap_or_else(|| panic!("a session"))
        };
        assert!(open(auth::ADMIN).require_writer().is_ok());
        assert!(matches!(
            open(auth::READER).require_writer(),
            Err(PageError::Forbidden(_))
        ));
    }
}
