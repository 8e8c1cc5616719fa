//! Who is calling and what they may do.
//!
//! Every request carries a [`Principal`] in its extensions, put there by the one
//! authentication layer in front of all services (`layer.rs`). With security off (the
//! loopback default) every caller is the trusted `anonymous` principal holding every
//! grant; once TLS client certificates or tokens are configured, callers that prove no
//! identity are refused before any handler runs, and each RPC's required permission is
//! checked there too. The one decision a layer cannot make, which log a write names, is
//! made by [`Principal::may_write`], called from the single place handlers resolve a
//! log for writing.

use std::sync::Arc;

pub(crate) mod config;
pub(crate) mod jwt;
pub(crate) mod layer;
pub(crate) mod peer;

pub(crate) use layer::{AuthLayer, Authenticator};
pub(crate) use peer::{ProofMaker, ProofVerifier};

/// What a principal may do. A grant names a permission; `write` grants name log-name
/// patterns (`*` matches any run of characters).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Grants {
    /// Reads: Get, Scan, ReadFeed, Edges, GetEntry, Heads, Subscribe, GetLog, ListLogs.
    pub(crate) read: bool,
    /// Log-name patterns this principal may write to (Append, Put, Delete, Link,
    /// Unlink, Write, Submit).
    pub(crate) write: Vec<String>,
    /// CreateLog and DropLog.
    pub(crate) log_admin: bool,
    /// SetMembers, Drain, Backup, ImportSnapshot, ExportSnapshot, Checkpoint.
    pub(crate) cluster_admin: bool,
    /// The Sync service: replication between members.
    pub(crate) peer: bool,
    /// Logs this principal may create on a replica, when its entry in the auth file
    /// says; otherwise `--logs-per-principal`.
    pub(crate) logs_max: Option<usize>,
}

impl Grants {
    /// The grants as role names, as `Admin.Status` shows them.
    pub(crate) fn roles(&self) -> Vec<String> {
        let mut roles = Vec::new();
        if self.read {
            roles.push("read".to_owned());
        }
        roles.extend(self.write.iter().map(|p| format!("write:{p}")));
        for (held, name) in
            [(self.log_admin, "log-admin"), (self.cluster_admin, "cluster-admin"), (self.peer, "peer")]
        {
            if held {
                roles.push(name.to_owned());
            }
        }
        roles
    }

    /// Every grant: the trusted caller of a replica with security off.
    pub(crate) fn all() -> Grants {
        Grants {
            read: true,
            write: vec!["*".to_owned()],
            log_admin: true,
            cluster_admin: true,
            peer: true,
            logs_max: None,
        }
    }
}

/// How a principal proved who it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Proof {
    /// Security is off: nobody proves anything, everybody is trusted.
    None,
    /// A bearer token from the tokens file.
    Token,
    /// A TLS client certificate signed by the configured client CA.
    Certificate,
    /// A JWT signed by the identity provider the auth file names.
    Jwt,
}

impl Proof {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Proof::None => "none",
            Proof::Token => "token",
            Proof::Jwt => "jwt",
            Proof::Certificate => "certificate",
        }
    }
}

/// The authenticated caller of one request.
#[derive(Clone, Debug)]
pub(crate) struct Principal {
    pub(crate) name: Arc<str>,
    pub(crate) proof: Proof,
    pub(crate) grants: Arc<Grants>,
}

impl Principal {
    /// The caller of a replica with security off.
    pub(crate) fn anonymous() -> Principal {
        Principal { name: "anonymous".into(), proof: Proof::None, grants: Arc::new(Grants::all()) }
    }

    /// The caller of a public method (health checks) on a replica that requires
    /// authentication: it holds nothing.
    pub(crate) fn anonymous_public() -> Principal {
        Principal { name: "anonymous".into(), proof: Proof::None, grants: Arc::new(Grants::default()) }
    }

    /// The principal as creator records name it: its proof and name (`token:app`,
    /// `certificate:alice`, `jwt:<subject>`), so that a token and a certificate of the
    /// same name are never one principal; `anonymous` with security off.
    pub(crate) fn identity(&self) -> String {
        match self.proof {
            Proof::None => "anonymous".to_owned(),
            proof => format!("{}:{}", proof.as_str(), self.name),
        }
    }

    /// How many logs this principal may create on this replica; `None` with security
    /// off, where the one trusted caller has only `--logs-max` to stay within.
    pub(crate) fn logs_quota(&self, default: usize) -> Option<usize> {
        match self.proof {
            Proof::None => None,
            _ => Some(self.grants.logs_max.unwrap_or(default)),
        }
    }

    /// Whether this principal may write to the log called `log_name`.
    pub(crate) fn may_write(&self, log_name: &str) -> bool {
        self.grants.write.iter().any(|pattern| glob_match(pattern, log_name))
    }

    /// The principal of a request; the anonymous one when no layer put one there (unit
    /// tests that call handlers directly).
    pub(crate) fn of<T>(request: &tonic::Request<T>) -> Principal {
        request.extensions().get::<Principal>().cloned().unwrap_or_else(Principal::anonymous)
    }
}

/// `*` matches any run of characters (none included); everything else matches itself.
pub(crate) fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni) = (0, 0);
    // Where the last `*` was, and the name position it has swallowed up to.
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ni));
            pi += 1;
        } else if pi < p.len() && p[pi] == n[ni] {
            pi += 1;
            ni += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Log-name patterns match as the docs say: `*` is any run, the rest literal.
    #[test]
    fn glob_patterns() {
        assert!(glob_match("*", ""));
        assert!(glob_match("*", "orders"));
        assert!(glob_match("orders", "orders"));
        assert!(!glob_match("orders", "orders2"));
        assert!(glob_match("orders-*", "orders-eu"));
        assert!(glob_match("orders-*", "orders-"));
        assert!(!glob_match("orders-*", "order"));
        assert!(glob_match("*-eu", "orders-eu"));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXbYY"));
        assert!(glob_match("a**", "a"));
    }
}
