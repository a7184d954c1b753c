//! Shared server state: credentials, the directory, issued tokens, faults and the request log.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use url::Url;

use crate::certificates::EmulatedCertificate;
use crate::directory::Directory;
use crate::faults::Fault;

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
    /// When the request arrived.
    pub at: Instant,
    /// When the answer was ready (after any injected latency).
    pub answered_at: Instant,
    /// Request headers, names lowercase, in arrival order; `authorization` is left out.
    pub headers: Vec<(String, String)>,
}

impl RecordedRequest {
    /// The value of a request header (name compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `ConsistencyLevel` header, if sent.
    pub fn consistency_level(&self) -> Option<&str> {
        self.header("consistencylevel")
    }
}

pub(crate) type AppState = Arc<Shared>;

pub(crate) struct Shared {
    pub(crate) tenant_id: String,
    pub(crate) client_id: String,
    pub(crate) client_secret: String,
    pub(crate) certificates: Vec<EmulatedCertificate>,
    pub(crate) token_lifetime: Duration,
    pub(crate) delta_page_size: usize,
    pub(crate) duplicate_delta_entries: bool,
    /// Origin used when a request carries no `Host` header.
    pub(crate) base_url: Url,
    directory: RwLock<Directory>,
    /// The signing keys the emulated identity provider publishes.
    pub(crate) idp: crate::idp::Published,
    /// Who the emulated sign-in page signs in, and its codes.
    pub(crate) sign_in: crate::idp::SignIn,
    tokens: Mutex<HashMap<String, Instant>>,
    requests: Mutex<Vec<RecordedRequest>>,
    /// The `scope` of every token request, in arrival order.
    token_scopes: Mutex<Vec<String>>,
    /// The inner request URLs of every `$batch`, in request order.
    batches_log: Mutex<Vec<Vec<String>>>,
    faults: Mutex<Vec<Fault>>,
    latency_micros: AtomicU64,
    clock_ahead_secs: AtomicU64,
    delta_epoch: AtomicU64,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    batches: AtomicU64,
}

/// Why a bearer token was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenRejection {
    Unknown,
    Expired,
}

/// The settings `Shared::new` takes besides the directory.
pub(crate) struct Settings {
    pub(crate) tenant_id: String,
    pub(crate) client_id: String,
    pub(crate) client_secret: String,
    pub(crate) certificates: Vec<EmulatedCertificate>,
    pub(crate) token_lifetime: Duration,
    pub(crate) delta_page_size: usize,
    pub(crate) duplicate_delta_entries: bool,
    pub(crate) base_url: Url,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub(crate) fn new(settings: Settings, directory: Directory) -> Self {
        Self {
            tenant_id: settings.tenant_id,
            client_id: settings.client_id,
            client_secret: settings.client_secret,
            certificates: settings.certificates,
            token_lifetime: settings.token_lifetime,
            delta_page_size: settings.delta_page_size,
            duplicate_delta_entries: settings.duplicate_delta_entries,
            base_url: settings.base_url,
            directory: RwLock::new(directory),
            idp: crate::idp::Published::default(),
            sign_in: crate::idp::SignIn::default(),
            tokens: Mutex::new(HashMap::new()),
            requests: Mutex::new(Vec::new()),
            token_scopes: Mutex::new(Vec::new()),
            batches_log: Mutex::new(Vec::new()),
            faults: Mutex::new(Vec::new()),
            latency_micros: AtomicU64::new(0),
            clock_ahead_secs: AtomicU64::new(0),
            delta_epoch: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            batches: AtomicU64::new(0),
        }
    }

    pub(crate) fn directory(&self) -> RwLockReadGuard<'_, Directory> {
        self.directory
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn directory_mut(&self) -> RwLockWriteGuard<'_, Directory> {
        self.directory
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn remember_token(&self, token: String, now: Instant) {
        let mut tokens = lock(&self.tokens);
        // Forget tokens that expired long ago so the map stays small.
        tokens.retain(|_, expires_at| *expires_at + Duration::from_secs(600) > now);
        tokens.insert(token, now + self.token_lifetime);
    }

    pub(crate) fn check_token(&self, token: &str, now: Instant) -> Result<(), TokenRejection> {
        let tokens = lock(&self.tokens);
        match tokens.get(token) {
            None => Err(TokenRejection::Unknown),
            Some(expires_at) if *expires_at <= now => Err(TokenRejection::Expired),
            Some(_) => Ok(()),
        }
    }

    pub(crate) fn revoke_tokens(&self) {
        lock(&self.tokens).clear();
    }

    pub(crate) fn record(&self, request: RecordedRequest) {
        lock(&self.requests).push(request);
    }

    pub(crate) fn record_token_scope(&self, scope: &str) {
        lock(&self.token_scopes).push(scope.to_owned());
    }

    pub(crate) fn token_scopes(&self) -> Vec<String> {
        lock(&self.token_scopes).clone()
    }

    pub(crate) fn record_batch(&self, urls: Vec<String>) {
        lock(&self.batches_log).push(urls);
    }

    pub(crate) fn batches(&self) -> Vec<Vec<String>> {
        lock(&self.batches_log).clone()
    }

    pub(crate) fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.requests).clone()
    }

    pub(crate) fn clear_requests(&self) {
        lock(&self.requests).clear();
    }

    pub(crate) fn inject(&self, fault: Fault) {
        lock(&self.faults).push(fault);
    }

    pub(crate) fn clear_faults(&self) {
        lock(&self.faults).clear();
    }

    /// Takes one use of the first fault matching `path`.
    pub(crate) fn take_fault(&self, path: &str) -> Option<Fault> {
        let mut faults = lock(&self.faults);
        let position = faults.iter().position(|f| f.matches(path))?;
        faults[position].times -= 1;
        let fault = faults[position].clone();
        if faults[position].times == 0 {
            faults.remove(position);
        }
        Some(fault)
    }

    pub(crate) fn set_latency(&self, latency: Duration) {
        self.latency_micros
            .store(latency.as_micros() as u64, Ordering::Relaxed);
    }

    pub(crate) fn latency(&self) -> Duration {
        Duration::from_micros(self.latency_micros.load(Ordering::Relaxed))
    }

    pub(crate) fn set_clock_ahead(&self, ahead: Duration) {
        self.clock_ahead_secs
            .store(ahead.as_secs(), Ordering::Relaxed);
    }

    pub(crate) fn clock_ahead(&self) -> Duration {
        Duration::from_secs(self.clock_ahead_secs.load(Ordering::Relaxed))
    }

    pub(crate) fn delta_epoch(&self) -> u64 {
        self.delta_epoch.load(Ordering::Relaxed)
    }

    pub(crate) fn expire_delta_tokens(&self) {
        self.delta_epoch.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a Graph request in; the guard counts it out when dropped.
    pub(crate) fn enter(self: &Arc<Self>) -> InFlight {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight {
            state: Arc::clone(self),
        }
    }

    pub(crate) fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }

    pub(crate) fn reset_max_in_flight(&self) {
        self.max_in_flight
            .store(self.in_flight.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    /// A new seed for shuffling the answers of one `$batch`.
    pub(crate) fn next_batch_seed(&self) -> u64 {
        self.batches.fetch_add(1, Ordering::Relaxed)
    }
}

/// One Graph request being served.
pub(crate) struct InFlight {
    state: AppState,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.state.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}
