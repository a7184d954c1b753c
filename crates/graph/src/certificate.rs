//! Certificate credentials: client assertions (JWT) signed with the app's RSA key.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::digest;
use ring::rand::SystemRandom;
use ring::signature::{self, RsaKeyPair};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use crate::Error;

/// Lifetime of a client assertion; Entra's docs advise at most 5–10 minutes.
pub const ASSERTION_LIFETIME: Duration = Duration::from_secs(5 * 60);

/// The `client_assertion_type` of a JWT client assertion.
pub(crate) const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// How a client assertion is signed and which thumbprint its header names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AssertionAlgorithm {
    /// RSASSA-PSS with SHA-256 and header `x5t#S256` (SHA-256 thumbprint), as Entra's
    /// current documentation shows.
    #[default]
    Ps256,
    /// RSASSA-PKCS1-v1_5 with SHA-256 and header `x5t` (SHA-1 thumbprint), the older form.
    Rs256,
}

/// An app certificate and its RSA private key, for signing client assertions.
///
/// `Debug` shows the thumbprints and the algorithm, never the key.
#[derive(Clone)]
pub struct ClientCertificate {
    key: Arc<RsaKeyPair>,
    algorithm: AssertionAlgorithm,
    sha1_thumbprint: String,
    sha256_thumbprint: String,
}

impl fmt::Debug for ClientCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCertificate")
            .field("algorithm", &self.algorithm)
            .field("x5t", &self.sha1_thumbprint)
            .field("x5t#S256", &self.sha256_thumbprint)
            .finish_non_exhaustive()
    }
}

impl ClientCertificate {
    /// Reads the certificate (`-----BEGIN CERTIFICATE-----`, the first one if a chain is given)
    /// and its RSA private key (`PRIVATE KEY`, PKCS#8, or `RSA PRIVATE KEY`, PKCS#1; not
    /// encrypted). Signs with [`AssertionAlgorithm::Ps256`] unless changed with
    /// [`ClientCertificate::with_algorithm`].
    ///
    /// Fails with [`Error::InvalidConfig`] if either cannot be read or the key does not belong
    /// to the certificate; the message never contains key material.
    pub fn from_pem(certificate_pem: &str, private_key_pem: &SecretString) -> Result<Self, Error> {
        let invalid =
            |message: &str| Error::InvalidConfig(format!("client certificate: {message}"));
        let certificate = pem_block(certificate_pem, "CERTIFICATE")
            .ok_or_else(|| invalid("no CERTIFICATE block in the certificate PEM"))?;
        let key_pem = private_key_pem.expose_secret();
        let key = if let Some(der) = pem_block(key_pem, "PRIVATE KEY") {
            RsaKeyPair::from_pkcs8(&der).map_err(|e| {
                invalid(&format!(
                    "the PKCS#8 private key is not a usable RSA key ({e})"
                ))
            })?
        } else if let Some(der) = pem_block(key_pem, "RSA PRIVATE KEY") {
            RsaKeyPair::from_der(&der).map_err(|e| {
                invalid(&format!(
                    "the PKCS#1 private key is not a usable RSA key ({e})"
                ))
            })?
        } else if key_pem.contains("ENCRYPTED PRIVATE KEY") {
            return Err(invalid(
                "encrypted private keys are not supported; decrypt it first",
            ));
        } else {
            return Err(invalid(
                "no PRIVATE KEY or RSA PRIVATE KEY block in the key PEM",
            ));
        };
        let public_key = key.public().as_ref();
        if !certificate
            .windows(public_key.len())
            .any(|window| window == public_key)
        {
            return Err(invalid(
                "the private key does not belong to the certificate",
            ));
        }
        Ok(Self {
            key: Arc::new(key),
            algorithm: AssertionAlgorithm::default(),
            sha1_thumbprint: URL_SAFE_NO_PAD.encode(digest::digest(
                &digest::SHA1_FOR_LEGACY_USE_ONLY,
                &certificate,
            )),
            sha256_thumbprint: URL_SAFE_NO_PAD
                .encode(digest::digest(&digest::SHA256, &certificate)),
        })
    }

    /// Returns this certificate signing with `algorithm`.
    pub fn with_algorithm(mut self, algorithm: AssertionAlgorithm) -> Self {
        self.algorithm = algorithm;
        self
    }

    /// Returns the signing algorithm.
    pub fn algorithm(&self) -> AssertionAlgorithm {
        self.algorithm
    }

    /// Returns the base64url SHA-1 thumbprint of the certificate (the `x5t` header).
    pub fn sha1_thumbprint(&self) -> &str {
        &self.sha1_thumbprint
    }

    /// Returns the base64url SHA-256 thumbprint of the certificate (the `x5t#S256` header).
    pub fn sha256_thumbprint(&self) -> &str {
        &self.sha256_thumbprint
    }

    /// Builds a signed client assertion for `client_id` and the token endpoint `audience`,
    /// valid from `now` for [`ASSERTION_LIFETIME`], with a fresh `jti`.
    pub fn assertion(
        &self,
        client_id: &str,
        audience: &str,
        now: SystemTime,
    ) -> Result<SecretString, Error> {
        let issued = now
            .duration_since(UNIX_EPOCH)
            .map_err(|_| Error::InvalidConfig("the clock is before 1970".to_owned()))?
            .as_secs();
        let header = match self.algorithm {
            AssertionAlgorithm::Ps256 => {
                json!({"alg": "PS256", "typ": "JWT", "x5t#S256": self.sha256_thumbprint})
            }
            AssertionAlgorithm::Rs256 => {
                json!({"alg": "RS256", "typ": "JWT", "x5t": self.sha1_thumbprint})
            }
        };
        let claims = json!({
            "aud": audience,
            "iss": client_id,
            "sub": client_id,
            "jti": uuid::Uuid::new_v4().to_string(),
            "nbf": issued,
            "iat": issued,
            "exp": issued + ASSERTION_LIFETIME.as_secs(),
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let padding: &dyn signature::RsaEncoding = match self.algorithm {
            AssertionAlgorithm::Ps256 => &signature::RSA_PSS_SHA256,
            AssertionAlgorithm::Rs256 => &signature::RSA_PKCS1_SHA256,
        };
        let mut signature = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(
                padding,
                &SystemRandom::new(),
                signing_input.as_bytes(),
                &mut signature,
            )
            .map_err(|_| Error::InvalidConfig("cannot sign the client assertion".to_owned()))?;
        Ok(SecretString::from(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        )))
    }
}

/// Decodes the first PEM block labelled exactly `label`.
fn pem_block(pem: &str, label: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem.find(&begin)? + begin.len();
    let stop = start + pem[start..].find(&end)?;
    let body: String = pem[start..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    STANDARD.decode(body).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CERT: &str = include_str!("../tests/fixtures/app-cert.pem");
    const KEY: &str = include_str!("../tests/fixtures/app-key.pem");
    const KEY_PKCS1: &str = include_str!("../tests/fixtures/app-key-pkcs1.pem");
    const OTHER_KEY: &str = include_str!("../tests/fixtures/other-key.pem");

    fn secret(text: &str) -> SecretString {
        SecretString::from(text.to_owned())
    }

    fn decode_part(part: &str) -> serde_json::Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    #[test]
    fn pkcs8_and_pkcs1_keys_give_the_same_thumbprints() {
        let pkcs8 = ClientCertificate::from_pem(CERT, &secret(KEY)).unwrap();
        let pkcs1 = ClientCertificate::from_pem(CERT, &secret(KEY_PKCS1)).unwrap();
        assert_eq!(pkcs8.sha1_thumbprint(), pkcs1.sha1_thumbprint());
        assert_eq!(pkcs8.sha256_thumbprint().len(), 43);
        assert_eq!(pkcs8.sha1_thumbprint().len(), 27);
    }

    #[test]
    fn a_key_of_another_certificate_is_invalid_config_without_key_material() {
        let error = ClientCertificate::from_pem(CERT, &secret(OTHER_KEY)).unwrap_err();
        assert!(matches!(error, Error::InvalidConfig(_)), "{error:?}");
        assert!(error.to_string().contains("does not belong"));
        assert!(!error.to_string().contains("MII"));
    }

    #[test]
    fn garbage_is_invalid_config() {
        assert!(ClientCertificate::from_pem("nope", &secret(KEY)).is_err());
        assert!(ClientCertificate::from_pem(CERT, &secret("nope")).is_err());
    }

    #[test]
    fn debug_never_shows_the_key() {
        let certificate = ClientCertificate::from_pem(CERT, &secret(KEY)).unwrap();
        let debug = format!("{certificate:?}");
        assert!(debug.contains("x5t#S256"));
        assert!(!debug.contains("MII"));
    }

    #[test]
    fn a_ps256_assertion_names_the_sha256_thumbprint_and_carries_the_claims() {
        let certificate = ClientCertificate::from_pem(CERT, &secret(KEY)).unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let aud = "https://login.microsoftonline.com/t/oauth2/v2.0/token";
        let jwt = certificate.assertion("client", aud, now).unwrap();
        let parts: Vec<&str> = jwt.expose_secret().split('.').collect();
        assert_eq!(parts.len(), 3);
        let header = decode_part(parts[0]);
        assert_eq!(header["alg"], "PS256");
        assert_eq!(header["x5t#S256"], certificate.sha256_thumbprint());
        assert!(header.get("x5t").is_none());
        let claims = decode_part(parts[1]);
        assert_eq!(claims["aud"], aud);
        assert_eq!(claims["iss"], "client");
        assert_eq!(claims["sub"], "client");
        assert_eq!(claims["nbf"], 1_700_000_000);
        assert_eq!(claims["iat"], 1_700_000_000);
        assert_eq!(claims["exp"], 1_700_000_300);
        assert_eq!(claims["jti"].as_str().unwrap().len(), 36);
        // The signature verifies with the certificate's public key under PSS.
        let key = ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PSS_2048_8192_SHA256,
            certificate.key.public().as_ref().to_vec(),
        );
        let signed = format!("{}.{}", parts[0], parts[1]);
        key.verify(
            signed.as_bytes(),
            &URL_SAFE_NO_PAD.decode(parts[2]).unwrap(),
        )
        .unwrap();
    }

    #[test]
    fn an_rs256_assertion_names_the_sha1_thumbprint() {
        let certificate = ClientCertificate::from_pem(CERT, &secret(KEY))
            .unwrap()
            .with_algorithm(AssertionAlgorithm::Rs256);
        let jwt = certificate
            .assertion("c", "aud", SystemTime::now())
            .unwrap();
        let parts: Vec<&str> = jwt.expose_secret().split('.').collect();
        let header = decode_part(parts[0]);
        assert_eq!(header["alg"], "RS256");
        assert_eq!(header["x5t"], certificate.sha1_thumbprint());
        let key = ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            certificate.key.public().as_ref().to_vec(),
        );
        let signed = format!("{}.{}", parts[0], parts[1]);
        key.verify(
            signed.as_bytes(),
            &URL_SAFE_NO_PAD.decode(parts[2]).unwrap(),
        )
        .unwrap();
    }
}
