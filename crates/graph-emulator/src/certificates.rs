//! Certificate credentials: registered certificates and client-assertion checks.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::digest;
use ring::signature::{self, UnparsedPublicKey};
use serde_json::Value;

/// A certificate registered on the emulated app: its RSA public key and thumbprints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmulatedCertificate {
    /// PKCS#1 `RSAPublicKey` DER, from the certificate's subjectPublicKeyInfo.
    public_key: Vec<u8>,
    sha1_thumbprint: String,
    sha256_thumbprint: String,
}

impl EmulatedCertificate {
    /// Reads the first `CERTIFICATE` block of a PEM text (an RSA certificate).
    pub fn from_pem(pem: &str) -> anyhow::Result<Self> {
        const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
        const END: &str = "-----END CERTIFICATE-----";
        let start = pem
            .find(BEGIN)
            .ok_or_else(|| anyhow::anyhow!("no CERTIFICATE block"))?
            + BEGIN.len();
        let stop = start
            + pem[start..]
                .find(END)
                .ok_or_else(|| anyhow::anyhow!("unterminated CERTIFICATE block"))?;
        let body: String = pem[start..stop]
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        Self::from_der(&STANDARD.decode(body)?)
    }

    /// Reads a DER certificate.
    pub fn from_der(der: &[u8]) -> anyhow::Result<Self> {
        Ok(Self {
            public_key: rsa_public_key(der)
                .ok_or_else(|| anyhow::anyhow!("not an X.509 certificate with an RSA key"))?,
            sha1_thumbprint: URL_SAFE_NO_PAD
                .encode(digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, der)),
            sha256_thumbprint: URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, der)),
        })
    }

    /// Base64url SHA-1 thumbprint (an assertion's `x5t`).
    pub fn sha1_thumbprint(&self) -> &str {
        &self.sha1_thumbprint
    }

    /// Base64url SHA-256 thumbprint (an assertion's `x5t#S256`).
    pub fn sha256_thumbprint(&self) -> &str {
        &self.sha256_thumbprint
    }
}

/// One DER element: (tag, contents, rest).
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (length, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7F);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let length = rest[..n]
            .iter()
            .fold(0usize, |l, b| (l << 8) | usize::from(*b));
        (length, &rest[n..])
    };
    (rest.len() >= length).then(|| (tag, &rest[..length], &rest[length..]))
}

/// Certificate → tbsCertificate → subjectPublicKeyInfo → BIT STRING → RSAPublicKey.
fn rsa_public_key(der: &[u8]) -> Option<Vec<u8>> {
    const SEQUENCE: u8 = 0x30;
    let (tag, certificate, _) = element(der)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, mut tbs, _) = element(certificate)?;
    if tag != SEQUENCE {
        return None;
    }
    // [0] version (optional), serialNumber, signature, issuer, validity, subject.
    let (tag, _, rest) = element(tbs)?;
    tbs = if tag == 0xA0 { element(rest)?.2 } else { rest };
    for _ in 0..4 {
        tbs = element(tbs)?.2;
    }
    let (tag, spki, _) = element(tbs)?;
    if tag != SEQUENCE {
        return None;
    }
    let (_, _, rest) = element(spki)?;
    let (tag, bits, _) = element(rest)?;
    if tag != 0x03 || bits.first() != Some(&0) {
        return None;
    }
    Some(bits[1..].to_vec())
}

/// Why a client assertion was refused, as the AADSTS error the token endpoint answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AssertionRefusal {
    pub(crate) code: u32,
    pub(crate) description: String,
}

fn refuse(code: u32, description: impl Into<String>) -> AssertionRefusal {
    AssertionRefusal {
        code,
        description: description.into(),
    }
}

/// Checks a client assertion: JWT shape, `alg` PS256/RS256, a thumbprint naming a
/// registered certificate, the signature, `aud`, `iss` = `sub` = `client_id`, `nbf`/`exp`
/// against `now` (Unix seconds).
pub(crate) fn verify_assertion(
    assertion: &str,
    certificates: &[EmulatedCertificate],
    client_id: &str,
    audience: &str,
    now: u64,
) -> Result<(), AssertionRefusal> {
    let malformed = || refuse(50_027, "JWT token is invalid or malformed.");
    let parts: Vec<&str> = assertion.split('.').collect();
    let [header, claims, signature_part] = parts.as_slice() else {
        return Err(malformed());
    };
    let decode = |part: &str| -> Option<Value> {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).ok()?).ok()
    };
    let header = decode(header).ok_or_else(malformed)?;
    let claims_json = decode(claims).ok_or_else(malformed)?;
    let signature_bytes = URL_SAFE_NO_PAD
        .decode(signature_part)
        .map_err(|_| malformed())?;
    let algorithm: &dyn signature::VerificationAlgorithm =
        match header.get("alg").and_then(Value::as_str) {
            Some("PS256") => &signature::RSA_PSS_2048_8192_SHA256,
            Some("RS256") => &signature::RSA_PKCS1_2048_8192_SHA256,
            other => {
                return Err(refuse(
                    5_002_738,
                    format!(
                        "Invalid JWT token. '{}' is not a supported signature algorithm.",
                        other.unwrap_or("none")
                    ),
                ));
            }
        };
    let (thumbprint, certificate) =
        if let Some(x5t) = header.get("x5t#S256").and_then(Value::as_str) {
            (
                x5t,
                certificates.iter().find(|c| c.sha256_thumbprint == x5t),
            )
        } else if let Some(x5t) = header.get("x5t").and_then(Value::as_str) {
            (x5t, certificates.iter().find(|c| c.sha1_thumbprint == x5t))
        } else {
            return Err(refuse(
                700_027,
                "Client assertion contains no x5t or x5t#S256 header naming the certificate.",
            ));
        };
    let Some(certificate) = certificate else {
        return Err(refuse(
            700_027,
            format!(
                "The certificate with identifier used to sign the client assertion is not registered on application. [Reason - The key was not found., Thumbprint of key used by client: '{thumbprint}']"
            ),
        ));
    };
    let signed_len = assertion.len() - signature_part.len() - 1;
    UnparsedPublicKey::new(algorithm, &certificate.public_key)
        .verify(&assertion.as_bytes()[..signed_len], &signature_bytes)
        .map_err(|_| refuse(700_027, "Client assertion failed signature validation."))?;
    let text = |name: &str| claims_json.get(name).and_then(Value::as_str);
    if text("aud") != Some(audience) {
        return Err(refuse(
            700_212,
            format!(
                "Client assertion audience claim does not match Realm issuer. Expected '{audience}', got '{}'.",
                text("aud").unwrap_or_default()
            ),
        ));
    }
    if !text("iss").is_some_and(|iss| iss.eq_ignore_ascii_case(client_id))
        || !text("sub").is_some_and(|sub| sub.eq_ignore_ascii_case(client_id))
    {
        return Err(refuse(
            700_021,
            "Client assertion application identifier doesn't match 'client_id' parameter.",
        ));
    }
    let exp = claims_json
        .get("exp")
        .and_then(Value::as_u64)
        .ok_or_else(malformed)?;
    let nbf = claims_json.get("nbf").and_then(Value::as_u64).unwrap_or(0);
    if now >= exp || now < nbf {
        return Err(refuse(
            700_024,
            format!(
                "Client assertion is not within its valid time range. Current time: {now}, assertion valid from {nbf}, expiry time of assertion {exp}."
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CERT: &str = include_str!("../../graph/tests/fixtures/app-cert.pem");

    #[test]
    fn a_pem_certificate_gives_its_rsa_key_and_thumbprints() {
        let certificate = EmulatedCertificate::from_pem(CERT).unwrap();
        assert_eq!(certificate.sha256_thumbprint().len(), 43);
        assert_eq!(certificate.sha1_thumbprint().len(), 27);
        // RSAPublicKey ::= SEQUENCE { modulus, publicExponent }
        assert_eq!(certificate.public_key[0], 0x30);
        assert!(certificate.public_key.len() > 256);
    }

    #[test]
    fn junk_is_not_a_certificate() {
        assert!(EmulatedCertificate::from_pem("x").is_err());
        assert!(EmulatedCertificate::from_der(&[0x30, 0x03, 0x02, 0x01, 0x00]).is_err());
        assert!(EmulatedCertificate::from_der(&[0x30, 0x84, 0xFF]).is_err());
    }

    #[test]
    fn malformed_assertions_are_refused_with_aadsts50027() {
        for assertion in ["", "a.b", "a.b.c", "e30.e30.!!"] {
            let refusal = verify_assertion(assertion, &[], "c", "aud", 0).unwrap_err();
            assert_eq!(refusal.code, 50_027, "{assertion}");
        }
    }
}
