//! The auth file: which bearer tokens and which client certificates are which
//! principal, and the roles each holds.
//!
//! ```yaml
//! tokens:
//!   - name: orders-app
//!     hash: blake3:5f0c…          # `plaitctl token new` prints a token and this line
//!     roles: [read, "write:orders-*"]
//!     logs_max: 20                # logs it may create (default --logs-per-principal)
//! certificates:
//!   - common_name: alice          # the client certificate's subject CN
//!     roles: [cluster-admin, read]
//!   - group: analytics            # a subject O value
//!     roles: [read]
//! ```
//!
//! Two groups are built in, for certificates from the cluster's CA: `plait:peers`
//! (role `peer`) and `plait:admins` (role `admin`, every role).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

use super::{Grants, Principal, Proof};
use crate::net::CertIdentity;

/// The group of replica certificates.
pub(crate) const PEERS_GROUP: &str = "plait:peers";
/// The group of administrator certificates (the operator's among them).
pub(crate) const ADMINS_GROUP: &str = "plait:admins";
/// Entries in an auth file at most, and the bytes it may take.
const ENTRIES_MAX: usize = 10_000;
const FILE_BYTES_MAX: u64 = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub(crate) enum AuthConfigError {
    #[error("cannot read the auth file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("the auth file {path} is over {FILE_BYTES_MAX} bytes")]
    TooLarge { path: String },
    #[error("the auth file {path} is not valid: {message}")]
    Invalid { path: String, message: String },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    tokens: Vec<TokenRule>,
    #[serde(default)]
    certificates: Vec<CertRule>,
    /// JWTs from an identity provider, checked against its public key.
    #[serde(default)]
    jwt: Option<super::jwt::JwtRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRule {
    name: String,
    hash: String,
    roles: Vec<String>,
    #[serde(default)]
    logs_max: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CertRule {
    common_name: Option<String>,
    group: Option<String>,
    roles: Vec<String>,
    #[serde(default)]
    logs_max: Option<usize>,
}

/// Parses one role into the grants it adds.
pub(crate) fn add_role(grants: &mut Grants, role: &str) -> Result<(), String> {
    match role {
        "read" => grants.read = true,
        "write" => grants.write.push("*".to_owned()),
        "log-admin" => grants.log_admin = true,
        "cluster-admin" => grants.cluster_admin = true,
        "peer" => grants.peer = true,
        "admin" => {
            let all = Grants::all();
            grants.read = true;
            grants.log_admin = true;
            grants.cluster_admin = true;
            grants.peer = true;
            grants.write.extend(all.write);
        }
        other => match other.strip_prefix("write:") {
            Some(pattern) if !pattern.is_empty() && pattern.len() <= 256 => {
                grants.write.push(pattern.to_owned())
            }
            _ => {
                return Err(format!(
                    "unknown role {other:?}: expected read, write, write:<log-name pattern>, log-admin, \
                     cluster-admin, peer or admin"
                ));
            }
        },
    }
    Ok(())
}

pub(crate) fn grants_of(roles: &[String]) -> Result<Grants, String> {
    let mut grants = Grants::default();
    for role in roles {
        add_role(&mut grants, role)?;
    }
    Ok(grants)
}

/// A token's digest as the auth file stores it.
pub(crate) fn token_digest(token: &str) -> [u8; 32] {
    *blake3::hash(token.as_bytes()).as_bytes()
}

/// Who is who, loaded from the auth file (or empty: certificates of the built-in groups
/// only).
#[derive(Debug, Default)]
pub(crate) struct Directory {
    tokens: HashMap<[u8; 32], Principal>,
    by_common_name: HashMap<String, Grants>,
    by_group: HashMap<String, Grants>,
    jwt: Option<super::jwt::JwtVerifier>,
}

impl Directory {
    /// The built-in groups and nothing else.
    pub(crate) fn builtin() -> Directory {
        let mut directory = Directory::default();
        let mut peers = Grants::default();
        add_role(&mut peers, "peer").expect("built-in role");
        directory.by_group.insert(PEERS_GROUP.to_owned(), peers);
        directory.by_group.insert(ADMINS_GROUP.to_owned(), Grants::all());
        directory
    }

    pub(crate) fn load(path: &Path) -> Result<Directory, AuthConfigError> {
        let shown = path.display().to_string();
        let meta = std::fs::metadata(path)
            .map_err(|source| AuthConfigError::Read { path: shown.clone(), source })?;
        if meta.len() > FILE_BYTES_MAX {
            return Err(AuthConfigError::TooLarge { path: shown });
        }
        let text = std::fs::read_to_string(path)
            .map_err(|source| AuthConfigError::Read { path: shown.clone(), source })?;
        Directory::parse_at(&text, path.parent())
            .map_err(|message| AuthConfigError::Invalid { path: shown, message })
    }

    #[cfg(test)]
    pub(crate) fn parse(text: &str) -> Result<Directory, String> {
        Directory::parse_at(text, None)
    }

    /// The directory an auth file's text describes; `base` is the file's directory, for
    /// relative paths in it.
    pub(crate) fn parse_at(text: &str, base: Option<&Path>) -> Result<Directory, String> {
        let file: File = if text.trim().is_empty() {
            File::default()
        } else {
            serde_yaml::from_str(text).map_err(|e| e.to_string())?
        };
        if file.tokens.len() + file.certificates.len() > ENTRIES_MAX {
            return Err(format!("more than {ENTRIES_MAX} entries"));
        }
        let mut directory = Directory::builtin();
        for (i, rule) in file.tokens.iter().enumerate() {
            let at = format!("tokens[{i}] ({:?})", rule.name);
            if rule.name.is_empty() || rule.name.len() > 128 {
                return Err(format!("{at}: a name of 1 to 128 bytes is required"));
            }
            let hex = rule.hash.strip_prefix("blake3:").ok_or_else(|| {
                format!("{at}: hash must be blake3:<64 hex digits> (plaitctl token new prints it)")
            })?;
            let mut digest = [0u8; 32];
            hex::decode_to_slice(hex, &mut digest)
                .map_err(|_| format!("{at}: hash must be blake3:<64 hex digits>"))?;
            let mut grants = grants_of(&rule.roles).map_err(|e| format!("{at}: {e}"))?;
            grants.logs_max = rule.logs_max;
            let principal =
                Principal { name: rule.name.as_str().into(), proof: Proof::Token, grants: Arc::new(grants) };
            if directory.tokens.insert(digest, principal).is_some() {
                return Err(format!("{at}: the same token hash appears twice"));
            }
        }
        for (i, rule) in file.certificates.iter().enumerate() {
            let at = format!("certificates[{i}]");
            let mut grants = grants_of(&rule.roles).map_err(|e| format!("{at}: {e}"))?;
            grants.logs_max = rule.logs_max;
            let target = match (&rule.common_name, &rule.group) {
                (Some(cn), None) => directory.by_common_name.entry(cn.clone()),
                (None, Some(group)) => directory.by_group.entry(group.clone()),
                _ => return Err(format!("{at}: give exactly one of common_name or group")),
            };
            merge(target.or_default(), grants);
        }
        if let Some(rule) = &file.jwt {
            directory.jwt = Some(super::jwt::JwtVerifier::from_rule(rule, base)?);
        }
        Ok(directory)
    }

    /// The principal a bearer token stands for.
    pub(crate) fn token(&self, token: &str) -> Option<Principal> {
        self.tokens.get(&token_digest(token)).cloned()
    }

    /// The principal a bearer token stands for at `now` (seconds since the epoch): a
    /// JWT when the auth file configures one and the token has a JWT's shape, else a
    /// token of the file. `Err` says why a JWT was refused.
    pub(crate) fn bearer(&self, token: &str, now: u64) -> Result<Option<Principal>, String> {
        match &self.jwt {
            Some(jwt) if super::jwt::looks_like_jwt(token) => jwt.verify(token, now).map(Some),
            _ => Ok(self.token(token)),
        }
    }

    /// The principal a verified client certificate stands for: its CN, holding the
    /// grants of its CN and of each of its groups (possibly none).
    pub(crate) fn certificate(&self, cert: &CertIdentity) -> Principal {
        let mut grants = self.by_common_name.get(&cert.common_name).cloned().unwrap_or_default();
        for group in &cert.groups {
            if let Some(g) = self.by_group.get(group) {
                merge(&mut grants, g.clone());
            }
        }
        Principal {
            name: cert.common_name.as_str().into(),
            proof: Proof::Certificate,
            grants: Arc::new(grants),
        }
    }
}

fn merge(into: &mut Grants, from: Grants) {
    into.read |= from.read;
    into.log_admin |= from.log_admin;
    into.cluster_admin |= from.cluster_admin;
    into.peer |= from.peer;
    into.write.extend(from.write);
    // Each rule adds what it grants, so the larger quota of the rules that match holds.
    into.logs_max = match (into.logs_max, from.logs_max) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tokens are found by their hash only; certificates get the grants of their CN and
    /// groups; the built-in groups hold what the docs say; bad files name the problem.
    #[test]
    fn directory_maps_tokens_and_certificates() {
        let hash = hex::encode(token_digest("s3cret"));
        let text = format!(
            "tokens:\n  - name: app\n    hash: blake3:{hash}\n    roles: [read, \"write:orders-*\"]\n    logs_max: 7\n\
             certificates:\n  - common_name: alice\n    roles: [cluster-admin]\n    logs_max: 2\n\
             \x20 - group: ops\n    roles: [read]\n    logs_max: 1\n"
        );
        let d = Directory::parse(&text).unwrap();
        let app = d.token("s3cret").unwrap();
        assert_eq!(&*app.name, "app");
        assert!(app.grants.read && app.may_write("orders-eu") && !app.may_write("users"));
        assert!(!app.grants.log_admin && !app.grants.cluster_admin && !app.grants.peer);
        assert!(d.token("S3cret").is_none());

        let alice = d.certificate(&CertIdentity { common_name: "alice".into(), groups: vec!["ops".into()] });
        assert!(alice.grants.cluster_admin && alice.grants.read && !alice.grants.peer);
        assert_eq!(alice.identity(), "certificate:alice");
        assert_eq!(app.identity(), "token:app");
        assert_eq!(
            (app.logs_quota(100), alice.logs_quota(100)),
            (Some(7), Some(2)),
            "the larger matching quota"
        );
        let nobody = d.certificate(&CertIdentity { common_name: "mallory".into(), groups: vec![] });
        assert_eq!(*nobody.grants, Grants::default());
        let peer =
            d.certificate(&CertIdentity { common_name: "plait-1".into(), groups: vec![PEERS_GROUP.into()] });
        assert!(peer.grants.peer && !peer.grants.read && peer.grants.write.is_empty());
        let admin =
            d.certificate(&CertIdentity { common_name: "op".into(), groups: vec![ADMINS_GROUP.into()] });
        assert_eq!(*admin.grants, Grants::all());

        for (bad, says) in [
            ("tokens:\n  - name: a\n    hash: abc\n    roles: []\n", "blake3:"),
            ("tokens:\n  - name: a\n    hash: blake3:zz\n    roles: []\n", "64 hex"),
            ("certificates:\n  - roles: [read]\n", "exactly one"),
            ("certificates:\n  - group: g\n    roles: [superuser]\n", "unknown role"),
            ("tokenz: []\n", "unknown field"),
        ] {
            let err = Directory::parse(bad).unwrap_err();
            assert!(err.contains(says), "{bad:?}: {err}");
        }
    }
}
