//! Shared server state: credentials, the directory, issued tokens and the request log.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hasher};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use url::Url;

use crate::synthetic::EmulatedUser;

/// One request the emulator answered, for tests to assert on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// HTTP method, e.g. `GET`.
    pub method: String,
    /// Path and query exactly as received, e.g. `/v1.0/users?$top=999`.
    pub path_and_query: String,
    /// Whether the request carried an `Authorization` header.
    pub has_authorization: bool,
    /// Status code of the response.
    pub status: u16,
}

pub(crate) type AppState = Arc<Shared>;

pub(crate) struct Shared {
    pub(crate) tenant_id: String,
    pub(crate) client_id: String,
    pub(crate) client_secret: String,
    pub(crate) token_lifetime: Duration,
    /// Origin used when a request carries no `Host` header.
    pub(crate) base_url: Url,
    directory: RwLock<Directory>,
    tokens: Mutex<HashMap<String, Instant>>,
    requests: Mutex<Vec<RecordedRequest>>,
}

/// Why a bearer token was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenRejection {
    Unknown,
    Expired,
}

impl Shared {
    pub(crate) fn new(
        tenant_id: String,
        client_id: String,
        client_secret: String,
        token_lifetime: Duration,
        base_url: Url,
        directory: Directory,
    ) -> Self {
        Self {
            tenant_id,
            client_id,
            client_secret,
            token_lifetime,
            base_url,
            directory: RwLock::new(directory),
            tokens: Mutex::new(HashMap::new()),
            requests: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn directory(&self) -> RwLockReadGuard<'_, Directory> {
        self.directory
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn remember_token(&self, token: String, now: Instant) {
        let mut tokens = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
        // Forget tokens that expired long ago so the map stays small.
        tokens.retain(|_, expires_at| *expires_at + Duration::from_secs(600) > now);
        tokens.insert(token, now + self.token_lifetime);
    }

    pub(crate) fn check_token(&self, token: &str, now: Instant) -> Result<(), TokenRejection> {
        let tokens = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
        match tokens.get(token) {
            None => Err(TokenRejection::Unknown),
            Some(expires_at) if *expires_at <= now => Err(TokenRejection::Expired),
            Some(_) => Ok(()),
        }
    }

    pub(crate) fn record(&self, request: RecordedRequest) {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(request);
    }

    pub(crate) fn requests(&self) -> Vec<RecordedRequest> {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The tenant's users in a stable order, with lookups by id and by UPN.
pub(crate) struct Directory {
    users: Vec<EmulatedUser>,
    by_id: KeyIndex,
    by_upn: KeyIndex,
}

impl Directory {
    pub(crate) fn new(users: Vec<EmulatedUser>) -> anyhow::Result<Self> {
        let by_id = KeyIndex::build(users.iter().map(|u| u.id.as_str()));
        let by_upn = KeyIndex::build(users.iter().map(|u| u.user_principal_name.as_str()));
        let directory = Self {
            users,
            by_id,
            by_upn,
        };
        if let Some(duplicate) = directory.by_id.first_duplicate(|i| &directory.users[i].id) {
            anyhow::bail!("duplicate user id {duplicate:?}");
        }
        if let Some(duplicate) = directory
            .by_upn
            .first_duplicate(|i| &directory.users[i].user_principal_name)
        {
            anyhow::bail!("duplicate userPrincipalName {duplicate:?}");
        }
        Ok(directory)
    }

    pub(crate) fn users(&self) -> &[EmulatedUser] {
        &self.users
    }

    /// Finds a user by object id or userPrincipalName, both case-insensitively.
    pub(crate) fn find(&self, id_or_upn: &str) -> Option<&EmulatedUser> {
        self.by_id
            .find(id_or_upn, |i| &self.users[i].id)
            .or_else(|| {
                self.by_upn
                    .find(id_or_upn, |i| &self.users[i].user_principal_name)
            })
            .map(|i| &self.users[i])
    }
}

/// A case-insensitive lookup from key to position, stored as sorted (hash, position) pairs
/// (12 bytes a user instead of a `HashMap<String, _>` copy of every key).
struct KeyIndex {
    entries: Vec<(u64, u32)>,
}

impl KeyIndex {
    fn build<'a>(keys: impl Iterator<Item = &'a str>) -> Self {
        let mut entries: Vec<(u64, u32)> = keys
            .enumerate()
            .map(|(position, key)| (fold_hash(key), position as u32))
            .collect();
        entries.sort_unstable();
        Self { entries }
    }

    fn find<'a>(&self, key: &str, key_at: impl Fn(usize) -> &'a String) -> Option<usize> {
        let hash = fold_hash(key);
        let start = self.entries.partition_point(|(h, _)| *h < hash);
        self.entries[start..]
            .iter()
            .take_while(|(h, _)| *h == hash)
            .map(|(_, position)| *position as usize)
            .find(|position| eq_fold(key_at(*position), key))
    }

    fn first_duplicate<'a>(&self, key_at: impl Fn(usize) -> &'a String) -> Option<&'a String> {
        let mut start = 0;
        while start < self.entries.len() {
            let hash = self.entries[start].0;
            let end = start + self.entries[start..].partition_point(|(h, _)| *h == hash);
            let run = &self.entries[start..end];
            for (i, (_, a)) in run.iter().enumerate() {
                for (_, b) in &run[i + 1..] {
                    let key = key_at(*a as usize);
                    if eq_fold(key, key_at(*b as usize)) {
                        return Some(key);
                    }
                }
            }
            start = end;
        }
        None
    }
}

fn fold_hash(key: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    for c in key.chars().flat_map(char::to_lowercase) {
        hasher.write_u32(u32::from(c));
    }
    hasher.finish()
}

fn eq_fold(a: &str, b: &str) -> bool {
    a.chars()
        .flat_map(char::to_lowercase)
        .eq(b.chars().flat_map(char::to_lowercase))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::synthetic_users;

    #[test]
    fn users_are_found_by_id_and_by_user_principal_name_in_any_case() {
        let users = synthetic_users(300, "contoso.com");
        let directory = Directory::new(users.clone()).unwrap();
        for user in &users {
            assert_eq!(directory.find(&user.id.to_uppercase()), Some(user));
            assert_eq!(
                directory.find(&user.user_principal_name.to_uppercase()),
                Some(user)
            );
        }
        assert_eq!(directory.find("nobody@contoso.com"), None);
    }

    #[test]
    fn a_directory_with_duplicate_user_principal_names_is_refused() {
        let mut users = synthetic_users(3, "contoso.com");
        users[2].user_principal_name = users[0].user_principal_name.to_uppercase();
        assert!(Directory::new(users).is_err());
    }
}
