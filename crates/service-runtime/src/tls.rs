//! TLS for our gRPC servers and clients.
//!
//! Servers take connections through [`incoming`] rather than tonic's own `ServerTlsConfig` so the
//! certificate can be renewed on disk (cert-manager, a mounted Kubernetes secret) without a
//! restart, and so that one slow or broken client cannot hold up the accept loop. Clients use
//! tonic's `ClientTlsConfig` through [`configure_endpoint`].
//!
//! Key material never appears in logs or errors; only file paths do.

use std::hash::{DefaultHasher, Hash as _, Hasher as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use anyhow::{Context as _, bail};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

/// A client gets this long to finish its handshake; then its connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(10);
/// Pause after a failed `accept` (typically out of file descriptors) so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// Server-side TLS. Off unless `cert_file` is set.
#[derive(Debug, Clone, Default, serde::Deserialize, PartialEq)]
#[serde(default)]
pub struct ServerTls {
    /// PEM certificate chain, leaf first.
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) for `cert_file`.
    pub key_file: Option<PathBuf>,
    /// PEM CA certificates that client certificates are verified against.
    pub client_ca_file: Option<PathBuf>,
    /// Refuse clients that present no certificate signed by `client_ca_file`.
    pub require_client_cert: bool,
    /// How often the certificate and key files are checked for a renewal; 0 means 10 seconds.
    pub reload_interval_seconds: u64,
}

impl ServerTls {
    /// Whether TLS is configured at all.
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some()
    }

    /// Checks that the fields that only make sense together are set together.
    pub fn validate(&self) -> anyhow::Result<()> {
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) => bail!("tls: key_file must be set when cert_file is set"),
            (None, Some(_)) => bail!("tls: cert_file must be set when key_file is set"),
            _ => {}
        }
        if self.require_client_cert && self.client_ca_file.is_none() {
            bail!("tls: client_ca_file must be set when require_client_cert is true");
        }
        if self.client_ca_file.is_some() && self.cert_file.is_none() {
            bail!("tls: client_ca_file is set but cert_file is not, so TLS would be off");
        }
        Ok(())
    }

    /// The effective interval between checks of the certificate and key files.
    pub fn reload_interval(&self) -> Duration {
        match self.reload_interval_seconds {
            0 => DEFAULT_RELOAD_INTERVAL,
            seconds => Duration::from_secs(seconds),
        }
    }
}

/// Client-side TLS for an outgoing channel. Off unless `ca_file` is set.
#[derive(Debug, Clone, Default, serde::Deserialize, PartialEq)]
#[serde(default)]
pub struct ClientTls {
    /// PEM CA certificates the server's certificate must chain to.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain, for servers that require mutual TLS.
    pub cert_file: Option<PathBuf>,
    /// PEM private key for `cert_file`.
    pub key_file: Option<PathBuf>,
    /// The name expected in the server's certificate, when it differs from the URL's host.
    pub domain: Option<String>,
}

impl ClientTls {
    /// Checks that the fields that only make sense together are set together.
    pub fn validate(&self) -> anyhow::Result<()> {
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) => bail!("tls: key_file must be set when cert_file is set"),
            (None, Some(_)) => bail!("tls: cert_file must be set when key_file is set"),
            _ => {}
        }
        // Without a CA the endpoint stays plain text; a lone client certificate or domain would
        // silently not be used.
        if self.ca_file.is_none() && (self.cert_file.is_some() || self.domain.is_some()) {
            bail!("tls: ca_file must be set when cert_file, key_file or domain is set");
        }
        Ok(())
    }
}

/// Applies `tls` to `endpoint`: trust only `ca_file`, present `cert_file`/`key_file` if set,
/// and expect `domain` in the server's certificate if set. Returns `endpoint` unchanged when
/// `ca_file` is not set. The endpoint's URL must be `https://`.
pub fn configure_endpoint(
    endpoint: tonic::transport::Endpoint,
    tls: &ClientTls,
) -> anyhow::Result<tonic::transport::Endpoint> {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};

    tls.validate()?;
    let Some(ca_file) = &tls.ca_file else {
        return Ok(endpoint);
    };
    // tonic only does TLS for `https` URLs and connects in plain text to `http` ones even with
    // a TLS config, so a wrong scheme would quietly drop the encryption.
    if endpoint.uri().scheme_str() != Some("https") {
        bail!(
            "tls: ca_file is set but the endpoint's URL scheme is {:?}, not \"https\"",
            endpoint.uri().scheme_str().unwrap_or("")
        );
    }
    let ca = read_file(ca_file)?;
    // tonic skips CA certificates it cannot parse, which would leave nothing trusted and fail
    // only at connect time with a vaguer message.
    parse_certificates(&ca, ca_file)?;
    let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
    if let (Some(cert_file), Some(key_file)) = (&tls.cert_file, &tls.key_file) {
        let cert = read_file(cert_file)?;
        let key = read_file(key_file)?;
        parse_certificates(&cert, cert_file)?;
        parse_private_key(&key, key_file)?;
        config = config.identity(Identity::from_pem(cert, key));
    }
    if let Some(domain) = &tls.domain {
        config = config.domain_name(domain.clone());
    }
    endpoint
        .tls_config(config)
        .context("tls: cannot build the client TLS configuration")
}

/// TLS connections accepted on `listener`, for `Server::serve_with_incoming_shutdown`.
///
/// Each handshake runs in its own task with a timeout; failed handshakes are logged and
/// skipped, never ending the stream. The certificate and key are re-read every
/// `reload_interval` and swapped in when they change. Everything stops when `shutdown` is
/// cancelled or the stream is dropped. Must be called inside a Tokio runtime.
pub fn incoming(
    listener: TcpListener,
    tls: &ServerTls,
    shutdown: CancellationToken,
) -> anyhow::Result<
    impl tokio_stream::Stream<Item = Result<TlsStream<TcpStream>, std::io::Error>>
    + Send
    + Unpin
    + 'static,
> {
    tls.validate()?;
    let (Some(cert_file), Some(key_file)) = (&tls.cert_file, &tls.key_file) else {
        bail!("tls: cert_file and key_file must be set to serve TLS");
    };
    let provider = CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));

    let mut reloader = CertReloader::new(cert_file, key_file, Arc::clone(&provider))?;
    let resolver = Arc::clone(&reloader.resolver);

    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .context("tls: the crypto provider supports no safe protocol version")?;
    let builder = match &tls.client_ca_file {
        Some(client_ca_file) => {
            let pem = read_file(client_ca_file)?;
            let mut roots = RootCertStore::empty();
            for cert in parse_certificates(&pem, client_ca_file)? {
                roots.add(cert).with_context(|| {
                    format!(
                        "tls: invalid CA certificate in {}",
                        client_ca_file.display()
                    )
                })?;
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider));
            let verifier = if tls.require_client_cert {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier.build().with_context(|| {
                format!(
                    "tls: cannot verify client certificates against {}",
                    client_ca_file.display()
                )
            })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(resolver);
    // gRPC is HTTP/2 only, and tonic's client refuses a connection that did not negotiate h2.
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));

    // A child token so that the reload task also stops when the server drops the stream.
    let stop = shutdown.child_token();
    let interval = tls.reload_interval();
    let reload_stop = stop.clone();
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await; // the first tick is immediate and the files were just read
        loop {
            tokio::select! {
                () = reload_stop.cancelled() => break,
                _ = ticker.tick() => reloader.check().await,
            }
        }
    });

    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(accept_loop(listener, acceptor, tx, stop));
    Ok(ReceiverStream::new(rx))
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    tx: mpsc::Sender<Result<TlsStream<TcpStream>, std::io::Error>>,
    stop: CancellationToken,
) {
    let _stop_on_exit = stop.clone().drop_guard();
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            () = tx.closed() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "cannot accept a connection");
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(ACCEPT_ERROR_BACKOFF) => continue,
                }
            }
        };
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%peer, %error, "cannot set TCP_NODELAY");
        }
        let acceptor = acceptor.clone();
        let tx = tx.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
            let outcome = tokio::select! {
                () = stop.cancelled() => return,
                outcome = handshake => outcome,
            };
            match outcome {
                // A failed send means the server has stopped; the connection just closes.
                Ok(Ok(tls)) => drop(tx.send(Ok(tls)).await),
                // rustls reports protocol and certificate errors as InvalidData; anything else
                // is a peer that went away, which load balancer probes and scanners do all day.
                Ok(Err(error)) if error.kind() == std::io::ErrorKind::InvalidData => {
                    tracing::info!(%peer, %error, "TLS handshake failed");
                }
                Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

/// Hands out the current certificate; the reloader swaps it.
struct ReloadingCert {
    current: RwLock<Arc<CertifiedKey>>,
}

// rustls wants Debug; print nothing of the key.
impl std::fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingCert").finish_non_exhaustive()
    }
}

impl ReloadingCert {
    fn get(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn set(&self, key: Arc<CertifiedKey>) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = key;
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

struct CertReloader {
    cert_file: PathBuf,
    key_file: PathBuf,
    provider: Arc<CryptoProvider>,
    resolver: Arc<ReloadingCert>,
    /// Fingerprint of the file contents last tried, loaded or not: a broken pair is reported
    /// once, not every interval, and retried as soon as either file changes.
    last_seen: u64,
    /// The last read error reported, so a missing file is not reported every interval.
    last_read_error: Option<String>,
}

impl CertReloader {
    fn new(
        cert_file: &Path,
        key_file: &Path,
        provider: Arc<CryptoProvider>,
    ) -> anyhow::Result<Self> {
        let cert = read_file(cert_file)?;
        let key = read_file(key_file)?;
        let certified = load_certified_key(&cert, cert_file, &key, key_file, &provider)?;
        Ok(Self {
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
            provider,
            resolver: Arc::new(ReloadingCert {
                current: RwLock::new(Arc::new(certified)),
            }),
            last_seen: fingerprint(&cert, &key),
            last_read_error: None,
        })
    }

    async fn check(&mut self) {
        let read = async {
            let cert = read_file_async(&self.cert_file).await?;
            let key = read_file_async(&self.key_file).await?;
            anyhow::Ok((cert, key))
        };
        let (cert, key) = match read.await {
            Ok(files) => files,
            Err(error) => {
                let message = format!("{error:#}");
                if self.last_read_error.as_ref() != Some(&message) {
                    tracing::warn!(
                        error = %message,
                        "cannot re-read the TLS certificate; keeping the one loaded"
                    );
                    self.last_read_error = Some(message);
                }
                return;
            }
        };
        self.last_read_error = None;
        let seen = fingerprint(&cert, &key);
        if seen == self.last_seen {
            return;
        }
        self.last_seen = seen;
        match load_certified_key(&cert, &self.cert_file, &key, &self.key_file, &self.provider) {
            Ok(certified) => {
                self.resolver.set(Arc::new(certified));
                tracing::info!(
                    cert_file = %self.cert_file.display(),
                    "reloaded the TLS certificate"
                );
            }
            Err(error) => tracing::warn!(
                error = %format!("{error:#}"),
                "cannot load the renewed TLS certificate; keeping the one loaded"
            ),
        }
    }
}

fn fingerprint(cert: &[u8], key: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    cert.hash(&mut hasher);
    key.hash(&mut hasher);
    hasher.finish()
}

fn load_certified_key(
    cert: &[u8],
    cert_file: &Path,
    key: &[u8],
    key_file: &Path,
    provider: &CryptoProvider,
) -> anyhow::Result<CertifiedKey> {
    let chain = parse_certificates(cert, cert_file)?;
    let key = parse_private_key(key, key_file)?;
    CertifiedKey::from_der(chain, key, provider).map_err(|error| match error {
        rustls::Error::InconsistentKeys(_) => anyhow::anyhow!(
            "tls: the key in {} does not belong to the certificate in {}",
            key_file.display(),
            cert_file.display()
        ),
        other => anyhow::anyhow!(
            "tls: cannot use the key in {} with the certificate in {}: {other}",
            key_file.display(),
            cert_file.display()
        ),
    })
}

fn parse_certificates(pem: &[u8], file: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("tls: cannot parse the PEM in {}", file.display()))?;
    if certs.is_empty() {
        bail!("tls: no certificate found in {}", file.display());
    }
    Ok(certs)
}

fn parse_private_key(pem: &[u8], file: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    // The PEM error is left out: its base64 message could quote part of the key.
    PrivateKeyDer::from_pem_slice(pem).map_err(|_| {
        anyhow::anyhow!(
            "tls: no PEM private key (PKCS#8, PKCS#1 or SEC1) found in {}",
            file.display()
        )
    })
}

fn read_file(file: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(file).with_context(|| format!("tls: cannot read {}", file.display()))
}

async fn read_file_async(file: &Path) -> anyhow::Result<Vec<u8>> {
    tokio::fs::read(file)
        .await
        .with_context(|| format!("tls: cannot read {}", file.display()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose,
    };
    use tonic::transport::Endpoint;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    struct Ca {
        issuer: CertifiedIssuer<'static, KeyPair>,
    }

    impl Ca {
        fn new(name: &str) -> Self {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.distinguished_name.push(DnType::CommonName, name);
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            let issuer =
                CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
            Self { issuer }
        }

        fn pem(&self) -> String {
            self.issuer.pem()
        }

        /// A leaf certificate and its key, both PEM.
        fn issue(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> (String, String) {
            let names: Vec<String> = names.iter().map(|&n| n.to_owned()).collect();
            let mut params = CertificateParams::new(names).unwrap();
            params.distinguished_name.push(DnType::CommonName, "leaf");
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = vec![usage];
            params.use_authority_key_identifier_extension = true;
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &self.issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        }

        fn issue_server(&self) -> (String, String) {
            self.issue(
                &["localhost", "127.0.0.1"],
                ExtendedKeyUsagePurpose::ServerAuth,
            )
        }
    }

    /// Writes `content` to `name` in `dir` and returns its path.
    fn write(dir: &tempfile::TempDir, name: &str, content: &str) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    struct Server {
        addr: std::net::SocketAddr,
        shutdown: CancellationToken,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.shutdown.cancel();
        }
    }

    async fn start_server(tls: &ServerTls) -> Server {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let connections = incoming(listener, tls, shutdown.clone()).unwrap();
        let signal = shutdown.clone();
        tokio::spawn(async move {
            let (_reporter, health) = tonic_health::server::health_reporter();
            tonic::transport::Server::builder()
                .add_service(health)
                .serve_with_incoming_shutdown(connections, signal.cancelled_owned())
                .await
                .unwrap();
        });
        Server { addr, shutdown }
    }

    /// Asks the server's health service over a fresh TLS connection.
    async fn check(addr: std::net::SocketAddr, tls: &ClientTls) -> anyhow::Result<i32> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let endpoint = Endpoint::from_shared(format!("https://127.0.0.1:{}", addr.port()))?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(5));
        let channel = configure_endpoint(endpoint, tls)?.connect().await?;
        let response = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await?;
        Ok(response.into_inner().status)
    }

    const SERVING: i32 = 1;

    /// What this thread logs from now until the guard drops; `#[tokio::test]` runs every task
    /// on the test's thread, so the server's background tasks are captured too.
    fn capture_logs() -> (tracing::subscriber::DefaultGuard, Logs) {
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        (tracing::subscriber::set_default(subscriber), logs)
    }

    #[derive(Clone, Default)]
    struct Logs(Arc<std::sync::Mutex<Vec<u8>>>);

    impl Logs {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
        }
    }

    impl std::io::Write for Logs {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The whole error chain of a call that must have failed, to check why it was refused.
    fn refusal(result: anyhow::Result<i32>) -> String {
        match result {
            Ok(status) => panic!("expected a refusal, got status {status}"),
            Err(error) => format!("{error:#}"),
        }
    }

    fn trusting(ca_file: &Path) -> ClientTls {
        ClientTls {
            ca_file: Some(ca_file.to_owned()),
            ..ClientTls::default()
        }
    }

    #[tokio::test]
    async fn a_client_trusting_the_ca_gets_an_answer_over_tls() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("ca");
        let (cert, key) = ca.issue_server();
        let server = start_server(&ServerTls {
            cert_file: Some(write(&dir, "server.crt", &cert)),
            key_file: Some(write(&dir, "server.key", &key)),
            ..ServerTls::default()
        })
        .await;
        let ca_file = write(&dir, "ca.crt", &ca.pem());

        assert_eq!(
            check(server.addr, &trusting(&ca_file)).await.unwrap(),
            SERVING
        );

        let by_name = ClientTls {
            domain: Some("localhost".to_owned()),
            ..trusting(&ca_file)
        };
        assert_eq!(check(server.addr, &by_name).await.unwrap(), SERVING);

        let other_ca_file = write(&dir, "other.crt", &Ca::new("other").pem());
        let refused = refusal(check(server.addr, &trusting(&other_ca_file)).await);
        assert!(refused.contains("UnknownIssuer"), "{refused}");
    }

    #[tokio::test]
    async fn with_mutual_tls_required_a_client_without_a_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let server_ca = Ca::new("server ca");
        let client_ca = Ca::new("client ca");
        let (cert, key) = server_ca.issue_server();
        let server = start_server(&ServerTls {
            cert_file: Some(write(&dir, "server.crt", &cert)),
            key_file: Some(write(&dir, "server.key", &key)),
            client_ca_file: Some(write(&dir, "client-ca.crt", &client_ca.pem())),
            require_client_cert: true,
            ..ServerTls::default()
        })
        .await;
        let server_ca_file = write(&dir, "server-ca.crt", &server_ca.pem());

        // With TLS 1.3 the client finishes its side of the handshake first, so the refusal
        // arrives as an alert on the first call rather than at connect.
        let anonymous = refusal(check(server.addr, &trusting(&server_ca_file)).await);
        assert!(anonymous.contains("CertificateRequired"), "{anonymous}");

        let (client_cert, client_key) =
            client_ca.issue(&["importer"], ExtendedKeyUsagePurpose::ClientAuth);
        let with_cert = ClientTls {
            cert_file: Some(write(&dir, "client.crt", &client_cert)),
            key_file: Some(write(&dir, "client.key", &client_key)),
            ..trusting(&server_ca_file)
        };
        assert_eq!(check(server.addr, &with_cert).await.unwrap(), SERVING);

        // Signed by a CA the server does not trust for clients.
        let (stranger_cert, stranger_key) =
            server_ca.issue(&["stranger"], ExtendedKeyUsagePurpose::ClientAuth);
        let stranger = ClientTls {
            cert_file: Some(write(&dir, "stranger.crt", &stranger_cert)),
            key_file: Some(write(&dir, "stranger.key", &stranger_key)),
            ..trusting(&server_ca_file)
        };
        let stranger = refusal(check(server.addr, &stranger).await);
        assert!(stranger.contains("UnknownCA"), "{stranger}");
    }

    #[tokio::test]
    async fn a_renewed_certificate_is_served_without_a_restart() {
        let (_guard, logs) = capture_logs();
        let dir = tempfile::tempdir().unwrap();
        let ca1 = Ca::new("ca1");
        let ca2 = Ca::new("ca2");
        let ca1_file = write(&dir, "ca1.crt", &ca1.pem());
        let ca2_file = write(&dir, "ca2.crt", &ca2.pem());
        let (cert_a, key_a) = ca1.issue_server();
        let cert_file = write(&dir, "server.crt", &cert_a);
        let key_file = write(&dir, "server.key", &key_a);
        let server = start_server(&ServerTls {
            cert_file: Some(cert_file.clone()),
            key_file: Some(key_file.clone()),
            reload_interval_seconds: 1,
            ..ServerTls::default()
        })
        .await;
        assert_eq!(
            check(server.addr, &trusting(&ca1_file)).await.unwrap(),
            SERVING
        );

        // A half-written renewal (new certificate, old key) must not replace the working pair.
        let (cert_b, key_b) = ca2.issue_server();
        std::fs::write(&cert_file, &cert_b).unwrap();
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(
            check(server.addr, &trusting(&ca1_file)).await.unwrap(),
            SERVING
        );
        let warning = logs
            .text()
            .lines()
            .find(|line| line.contains("WARN"))
            .map(str::to_owned)
            .expect("a WARN about the mismatched pair");
        assert!(warning.contains("server.key"), "{warning}");
        let key_body = key_a.lines().nth(1).unwrap();
        assert!(!logs.text().contains(&key_body[..16]));

        std::fs::write(&key_file, &key_b).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(status) = check(server.addr, &trusting(&ca2_file)).await {
                assert_eq!(status, SERVING);
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the renewed certificate was not served"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let refused = refusal(check(server.addr, &trusting(&ca1_file)).await);
        assert!(refused.contains("UnknownIssuer"), "{refused}");
    }

    #[tokio::test]
    async fn a_bad_handshake_does_not_stop_the_server() {
        use tokio::io::AsyncWriteExt as _;

        let (_guard, logs) = capture_logs();
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("ca");
        let (cert, key) = ca.issue_server();
        let server = start_server(&ServerTls {
            cert_file: Some(write(&dir, "server.crt", &cert)),
            key_file: Some(write(&dir, "server.key", &key)),
            ..ServerTls::default()
        })
        .await;
        let ca_file = write(&dir, "ca.crt", &ca.pem());

        let mut garbage = TcpStream::connect(server.addr).await.unwrap();
        garbage
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\x00\x01\x02")
            .await
            .unwrap();
        drop(garbage);
        // A client that connects and says nothing stays in its handshake meanwhile.
        let _silent = TcpStream::connect(server.addr).await.unwrap();

        for _ in 0..3 {
            assert_eq!(
                check(server.addr, &trusting(&ca_file)).await.unwrap(),
                SERVING
            );
        }
        assert!(
            logs.text().contains("TLS handshake failed"),
            "{}",
            logs.text()
        );
    }

    #[tokio::test]
    async fn a_certificate_without_its_key_is_a_configuration_error_naming_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, _key) = Ca::new("ca").issue_server();
        let tls = ServerTls {
            cert_file: Some(write(&dir, "server.crt", &cert)),
            ..ServerTls::default()
        };
        let error = tls.validate().unwrap_err().to_string();
        assert!(error.contains("key_file"), "{error}");

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let error = incoming(listener, &tls, CancellationToken::new())
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("key_file"), "{error}");

        let unverifiable = ServerTls {
            key_file: Some(dir.path().join("server.key")),
            require_client_cert: true,
            ..tls.clone()
        };
        let error = unverifiable.validate().unwrap_err().to_string();
        assert!(error.contains("client_ca_file"), "{error}");

        let client = ClientTls {
            cert_file: Some(dir.path().join("client.crt")),
            ca_file: Some(dir.path().join("ca.crt")),
            ..ClientTls::default()
        };
        let endpoint = Endpoint::from_static("https://127.0.0.1:1");
        let error = configure_endpoint(endpoint, &client)
            .unwrap_err()
            .to_string();
        assert!(error.contains("key_file"), "{error}");
    }

    #[tokio::test]
    async fn an_unreadable_file_is_named_and_a_key_never_shows_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("ca");
        let (cert, key) = ca.issue_server();
        let missing = ServerTls {
            cert_file: Some(write(&dir, "server.crt", &cert)),
            key_file: Some(dir.path().join("absent.key")),
            ..ServerTls::default()
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let error = format!(
            "{:#}",
            incoming(listener, &missing, CancellationToken::new())
                .err()
                .unwrap()
        );
        assert!(error.contains("absent.key"), "{error}");

        // A key with a corrupted body: the error names the file and quotes none of it.
        let body_line = key.lines().nth(1).unwrap().to_owned();
        let corrupted = key.replacen(&body_line, &format!("{}!!!!", &body_line), 1);
        let broken = ServerTls {
            key_file: Some(write(&dir, "broken.key", &corrupted)),
            ..missing.clone()
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let error = format!(
            "{:#}",
            incoming(listener, &broken, CancellationToken::new())
                .err()
                .unwrap()
        );
        assert!(error.contains("broken.key"), "{error}");
        assert!(!error.contains(&body_line[..16]), "{error}");

        let client = ClientTls {
            ca_file: Some(dir.path().join("absent-ca.crt")),
            ..ClientTls::default()
        };
        let endpoint = Endpoint::from_static("https://127.0.0.1:1");
        let error = format!("{:#}", configure_endpoint(endpoint, &client).unwrap_err());
        assert!(error.contains("absent-ca.crt"), "{error}");

        let plain = Endpoint::from_static("http://127.0.0.1:1");
        let client = trusting(&write(&dir, "ca.crt", &ca.pem()));
        let error = configure_endpoint(plain, &client).unwrap_err().to_string();
        assert!(error.contains("https"), "{error}");

        let untouched = Endpoint::from_static("http://127.0.0.1:1");
        let endpoint = configure_endpoint(untouched, &ClientTls::default()).unwrap();
        assert_eq!(endpoint.uri().scheme_str(), Some("http"));
    }
}
