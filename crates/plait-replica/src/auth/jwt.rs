//! Bearer tokens that are JWTs signed by an identity provider, checked against the public
//! key the auth file names: EdDSA (Ed25519) or ES256 (ECDSA P-256 with SHA-256), nothing
//! else. The principal is the `sub` claim; its roles are the configured roles claim
//! (default `roles`), an array of role strings; `iss` and `aud` must match the file, and
//! `exp` is required.
//!
//! ```yaml
//! jwt:
//!   public_key_file: /etc/plait/idp.pub.pem   # SubjectPublicKeyInfo PEM
//!   issuer: https://idp.example
//!   audience: plait
//!   roles_claim: plait_roles                  # optional; default `roles`
//! ```

use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

use super::config::grants_of;
use super::{Principal, Proof};

/// How far a token's `exp` and `nbf` may be off this replica's clock.
const LEEWAY_SECS: u64 = 60;
/// Roles one token may carry, and the bytes of its subject.
const ROLES_MAX: usize = 64;
const SUBJECT_BYTES_MAX: usize = 128;

/// The `jwt:` section of the auth file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct JwtRule {
    public_key_file: String,
    issuer: String,
    audience: String,
    #[serde(default = "default_roles_claim")]
    roles_claim: String,
}

fn default_roles_claim() -> String {
    "roles".to_owned()
}

#[derive(Debug)]
enum Key {
    /// The 32-byte Ed25519 public key.
    Ed25519(Vec<u8>),
    /// The 65-byte uncompressed P-256 point.
    P256(Vec<u8>),
}

/// Checks JWTs against one identity provider's key.
#[derive(Debug)]
pub(crate) struct JwtVerifier {
    key: Key,
    issuer: String,
    audience: String,
    roles_claim: String,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

/// Whether a bearer token has the shape of a JWT (three base64url parts).
pub(crate) fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3 && token.starts_with("eyJ")
}

impl JwtVerifier {
    /// The verifier the auth file's `jwt:` section describes; a relative key path is
    /// taken from the auth file's directory.
    pub(crate) fn from_rule(rule: &JwtRule, base: Option<&Path>) -> Result<JwtVerifier, String> {
        let path = match base {
            Some(dir) if Path::new(&rule.public_key_file).is_relative() => dir.join(&rule.public_key_file),
            _ => Path::new(&rule.public_key_file).to_owned(),
        };
        let pem = std::fs::read(&path).map_err(|e| format!("jwt: cannot read {}: {e}", path.display()))?;
        let key = key_from_pem(&pem).map_err(|e| format!("jwt: {}: {e}", path.display()))?;
        if rule.issuer.is_empty() || rule.audience.is_empty() {
            return Err("jwt: issuer and audience are required".into());
        }
        Ok(JwtVerifier {
            key,
            issuer: rule.issuer.clone(),
            audience: rule.audience.clone(),
            roles_claim: rule.roles_claim.clone(),
        })
    }

    /// The principal a JWT stands for, if its signature, issuer, audience and times check
    /// out at `now` (seconds since the epoch); otherwise why not.
    pub(crate) fn verify(&self, token: &str, now: u64) -> Result<Principal, String> {
        let mut parts = token.split('.');
        let (Some(header_b64), Some(claims_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("not a JWT (three dot-separated parts)".into());
        };
        let decode = |what: &str, part: &str| {
            URL_SAFE_NO_PAD.decode(part).map_err(|_| format!("the JWT's {what} is not base64url"))
        };
        let header: Header = serde_json::from_slice(&decode("header", header_b64)?)
            .map_err(|_| "the JWT's header is not a JSON object with `alg`".to_owned())?;
        if header.crit.is_some() {
            return Err("the JWT has critical header parameters this replica does not know".into());
        }
        let signature = decode("signature", signature_b64)?;
        let signed = &token.as_bytes()[..header_b64.len() + 1 + claims_b64.len()];
        let (algorithm, raw): (&'static dyn ring::signature::VerificationAlgorithm, &[u8]) =
            match (&self.key, header.alg.as_str()) {
                (Key::Ed25519(raw), "EdDSA") => (&ring::signature::ED25519, raw),
                (Key::P256(raw), "ES256") => (&ring::signature::ECDSA_P256_SHA256_FIXED, raw),
                (_, alg) => {
                    return Err(format!(
                        "the JWT is signed with {alg:?}, not with the configured key's algorithm"
                    ));
                }
            };
        ring::signature::UnparsedPublicKey::new(algorithm, raw)
            .verify(signed, &signature)
            .map_err(|_| "the JWT's signature does not verify with the configured key".to_owned())?;

        let claims: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&decode("claims", claims_b64)?)
                .map_err(|_| "the JWT's claims are not a JSON object".to_owned())?;
        let string = |name: &str| claims.get(name).and_then(|v| v.as_str());
        if string("iss") != Some(self.issuer.as_str()) {
            return Err(format!("the JWT's issuer is not {:?}", self.issuer));
        }
        let audience_ok = match claims.get("aud") {
            Some(serde_json::Value::String(aud)) => *aud == self.audience,
            Some(serde_json::Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(&self.audience)),
            _ => false,
        };
        if !audience_ok {
            return Err(format!("the JWT is not for the audience {:?}", self.audience));
        }
        let time = |name: &str| claims.get(name).and_then(|v| v.as_u64());
        let exp = time("exp").ok_or("the JWT has no `exp`")?;
        if now > exp.saturating_add(LEEWAY_SECS) {
            return Err("the JWT has expired".into());
        }
        if let Some(nbf) = time("nbf")
            && now.saturating_add(LEEWAY_SECS) < nbf
        {
            return Err("the JWT is not valid yet".into());
        }
        let subject = string("sub").filter(|s| !s.is_empty() && s.len() <= SUBJECT_BYTES_MAX);
        let subject = subject.ok_or("the JWT needs a `sub` of 1 to 128 bytes")?;
        let roles: Vec<String> = match claims.get(&self.roles_claim) {
            None => Vec::new(),
            Some(serde_json::Value::Array(roles)) if roles.len() <= ROLES_MAX => {
                roles.iter().map(|r| r.as_str().map(str::to_owned)).collect::<Option<_>>().ok_or_else(
                    || format!("the JWT's {:?} claim must be an array of strings", self.roles_claim),
                )?
            }
            Some(_) => {
                return Err(format!(
                    "the JWT's {:?} claim must be an array of at most {ROLES_MAX} strings",
                    self.roles_claim
                ));
            }
        };
        let grants = grants_of(&roles).map_err(|e| format!("the JWT's roles: {e}"))?;
        Ok(Principal { name: subject.into(), proof: Proof::Jwt, grants: Arc::new(grants) })
    }
}

/// The raw public key of a SubjectPublicKeyInfo PEM: Ed25519 or EC P-256.
fn key_from_pem(pem: &[u8]) -> Result<Key, String> {
    use x509_parser::prelude::FromDer;
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem).map_err(|e| format!("not a PEM file: {e}"))?;
    if pem.label != "PUBLIC KEY" {
        return Err(format!("expected a PUBLIC KEY PEM block, found {:?}", pem.label));
    }
    let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&pem.contents)
        .map_err(|e| format!("not a SubjectPublicKeyInfo: {e}"))?;
    let raw = spki.subject_public_key.data.to_vec();
    match spki.algorithm.algorithm.to_id_string().as_str() {
        "1.3.101.112" if raw.len() == 32 => Ok(Key::Ed25519(raw)),
        "1.2.840.10045.2.1" => {
            let curve =
                spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok()).map(|o| o.to_id_string());
            if curve.as_deref() != Some("1.2.840.10045.3.1.7") || raw.len() != 65 {
                return Err("an EC key must be on P-256 (prime256v1), uncompressed".into());
            }
            Ok(Key::P256(raw))
        }
        other => Err(format!("unsupported key algorithm {other}: use Ed25519 (EdDSA) or P-256 (ES256)")),
    }
}

#[cfg(test)]
mod tests {
    use ring::signature::{Ed25519KeyPair, KeyPair};

    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn ed25519() -> (Ed25519KeyPair, JwtVerifier) {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let verifier = JwtVerifier {
            key: Key::Ed25519(pair.public_key().as_ref().to_vec()),
            issuer: "https://idp.example".into(),
            audience: "plait".into(),
            roles_claim: "roles".into(),
        };
        (pair, verifier)
    }

    fn sign(pair: &Ed25519KeyPair, alg: &str, claims: serde_json::Value) -> String {
        let header = URL_SAFE_NO_PAD.encode(serde_json::json!({ "alg": alg, "typ": "JWT" }).to_string());
        let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signed = format!("{header}.{claims}");
        let signature = URL_SAFE_NO_PAD.encode(pair.sign(signed.as_bytes()).as_ref());
        format!("{signed}.{signature}")
    }

    fn claims() -> serde_json::Value {
        serde_json::json!({
            "iss": "https://idp.example", "aud": ["plait", "other"], "sub": "orders-app",
            "exp": NOW + 600, "nbf": NOW - 10, "roles": ["read", "write:orders-*"],
        })
    }

    /// A good token gives its subject with its roles; the roles claim is the only source
    /// of grants.
    #[test]
    fn a_good_token_is_its_subject_with_its_roles() {
        let (pair, verifier) = ed25519();
        let principal = verifier.verify(&sign(&pair, "EdDSA", claims()), NOW).unwrap();
        assert_eq!(&*principal.name, "orders-app");
        assert_eq!(principal.proof.as_str(), "jwt");
        assert!(principal.grants.read && !principal.grants.cluster_admin);
        assert_eq!(principal.grants.write, ["orders-*"]);
        assert!(looks_like_jwt(&sign(&pair, "EdDSA", claims())));
        assert!(!looks_like_jwt("plait_0123abcd"));
    }

    /// Every way a token can be wrong is refused, with a reason: another key, another
    /// algorithm (`none` included), a changed claim, the wrong issuer or audience,
    /// expired, not yet valid, no subject, roles that are not roles, garbage.
    #[test]
    fn bad_tokens_are_refused() {
        let (pair, verifier) = ed25519();
        let (other, _) = ed25519();
        let with = |f: &dyn Fn(&mut serde_json::Map<String, serde_json::Value>)| {
            let mut c = claims();
            f(c.as_object_mut().unwrap());
            sign(&pair, "EdDSA", c)
        };
        let cases: Vec<(String, &str)> = vec![
            (sign(&other, "EdDSA", claims()), "signature"),
            (sign(&pair, "ES256", claims()), "algorithm"),
            (sign(&pair, "none", claims()), "algorithm"),
            (with(&|c| drop(c.insert("iss".into(), "https://evil".into()))), "issuer"),
            (with(&|c| drop(c.insert("aud".into(), "someone-else".into()))), "audience"),
            (with(&|c| drop(c.remove("aud"))), "audience"),
            (with(&|c| drop(c.insert("exp".into(), (NOW - 120).into()))), "expired"),
            (with(&|c| drop(c.remove("exp"))), "exp"),
            (with(&|c| drop(c.insert("nbf".into(), (NOW + 3600).into()))), "not valid yet"),
            (with(&|c| drop(c.remove("sub"))), "sub"),
            (with(&|c| drop(c.insert("roles".into(), "admin".into()))), "array"),
            (with(&|c| drop(c.insert("roles".into(), serde_json::json!(["superuser"])))), "unknown role"),
            ("eyJ.a.b".into(), "header"),
            ("a.b".into(), "three"),
        ];
        for (token, why) in cases {
            let err = verifier.verify(&token, NOW).unwrap_err();
            assert!(err.contains(why), "{token}: {err} (wanted {why:?})");
        }
        // A claim changed after signing.
        let good = sign(&pair, "EdDSA", claims());
        let mut parts: Vec<&str> = good.split('.').collect();
        let mut forged = claims();
        forged["roles"] = serde_json::json!(["admin"]);
        let forged = URL_SAFE_NO_PAD.encode(forged.to_string());
        parts[1] = &forged;
        assert!(verifier.verify(&parts.join("."), NOW).unwrap_err().contains("signature"));
    }

    /// Keys are read from SubjectPublicKeyInfo PEM: Ed25519 and P-256, nothing else.
    #[test]
    fn keys_come_from_spki_pem() {
        let p256 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        assert!(matches!(key_from_pem(p256.public_key_pem().as_bytes()), Ok(Key::P256(_))));
        let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        assert!(matches!(key_from_pem(ed.public_key_pem().as_bytes()), Ok(Key::Ed25519(_))));
        let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        assert!(key_from_pem(p384.public_key_pem().as_bytes()).unwrap_err().contains("P-256"));
        assert!(key_from_pem(p256.serialize_pem().as_bytes()).unwrap_err().contains("PUBLIC KEY"));
        assert!(key_from_pem(b"nothing").is_err());
    }
}
