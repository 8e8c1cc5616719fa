//! What a certificate should say, and the bounds on it.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use crate::error::PkiError;

/// Longest subject CN, in characters: X.520's upper bound for a common name.
pub const COMMON_NAME_CHARS_MAX: usize = 64;
/// Longest group (subject O value), in characters: X.520's bound for an organization.
pub const GROUP_CHARS_MAX: usize = 64;
/// Most groups in one certificate.
pub const GROUPS_MAX: usize = 32;
/// Most DNS names in one certificate.
pub const DNS_NAMES_MAX: usize = 64;
/// Most IP addresses in one certificate.
pub const IP_ADDRESSES_MAX: usize = 64;
/// Longest DNS name, in bytes.
const DNS_NAME_BYTES_MAX: usize = 253;

/// How far [`Validity::from_now`] backdates the start, so a certificate issued on one
/// machine is already valid on another whose clock is a little behind.
pub const CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

/// When a certificate is valid: from `not_before` to `not_after`, both included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl Validity {
    /// Valid for `duration` from `now`, starting [`CLOCK_SKEW`] before `now`.
    pub fn from_now(now: SystemTime, duration: Duration) -> Validity {
        Validity {
            not_before: now.checked_sub(CLOCK_SKEW).unwrap_or(now),
            not_after: now.checked_add(duration).unwrap_or(now),
        }
    }

    pub(crate) fn check(&self) -> Result<(), PkiError> {
        if self.not_after <= self.not_before {
            return Err(PkiError::InvalidSpec("not_after must be later than not_before".into()));
        }
        Ok(())
    }
}

/// A certificate to issue: who it names, where it may serve, when it is valid and what
/// it may be used for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSpec {
    /// The subject CN: the principal's name.
    pub common_name: String,
    /// The subject O values: the principal's groups, in order.
    pub groups: Vec<String>,
    /// DNS names a server certificate is valid for (`*.plait.ns.svc` allowed).
    pub dns_names: Vec<String>,
    /// IP addresses a server certificate is valid for.
    pub ip_addresses: Vec<IpAddr>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// May authenticate a TLS server (extended key usage serverAuth).
    pub server: bool,
    /// May authenticate a TLS client (extended key usage clientAuth).
    pub client: bool,
}

impl CertSpec {
    /// A certificate for `common_name`, valid for both server and client use, with no
    /// groups and no names; add them with the builder methods.
    pub fn new(common_name: impl Into<String>, validity: Validity) -> CertSpec {
        CertSpec {
            common_name: common_name.into(),
            groups: Vec::new(),
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
            not_before: validity.not_before,
            not_after: validity.not_after,
            server: true,
            client: true,
        }
    }

    /// Adds a group (a subject O value).
    pub fn group(mut self, group: impl Into<String>) -> CertSpec {
        self.groups.push(group.into());
        self
    }

    /// Adds a DNS name the certificate is valid for.
    pub fn dns(mut self, name: impl Into<String>) -> CertSpec {
        self.dns_names.push(name.into());
        self
    }

    /// Adds an IP address the certificate is valid for.
    pub fn ip(mut self, ip: IpAddr) -> CertSpec {
        self.ip_addresses.push(ip);
        self
    }

    /// Only for TLS clients: no serverAuth usage.
    pub fn client_only(mut self) -> CertSpec {
        self.server = false;
        self.client = true;
        self
    }

    /// Only for TLS servers: no clientAuth usage.
    pub fn server_only(mut self) -> CertSpec {
        self.server = true;
        self.client = false;
        self
    }

    /// The validity period.
    pub fn validity(&self) -> Validity {
        Validity { not_before: self.not_before, not_after: self.not_after }
    }

    /// Checks every bound; the CA refuses a spec that fails.
    pub fn check(&self) -> Result<(), PkiError> {
        check_text("the common name", &self.common_name, COMMON_NAME_CHARS_MAX)?;
        if self.groups.len() > GROUPS_MAX {
            return Err(invalid(format!("{} groups; at most {GROUPS_MAX}", self.groups.len())));
        }
        for group in &self.groups {
            check_text("a group", group, GROUP_CHARS_MAX)?;
        }
        if self.dns_names.len() > DNS_NAMES_MAX {
            return Err(invalid(format!("{} DNS names; at most {DNS_NAMES_MAX}", self.dns_names.len())));
        }
        for name in &self.dns_names {
            check_dns_name(name)?;
        }
        if self.ip_addresses.len() > IP_ADDRESSES_MAX {
            return Err(invalid(format!(
                "{} IP addresses; at most {IP_ADDRESSES_MAX}",
                self.ip_addresses.len()
            )));
        }
        if !self.server && !self.client {
            return Err(invalid("a certificate must allow server use, client use or both".into()));
        }
        self.validity().check()
    }
}

fn invalid(message: String) -> PkiError {
    PkiError::InvalidSpec(message)
}

/// A subject value: 1 to `max` characters, no control characters.
pub(crate) fn check_text(what: &str, text: &str, max: usize) -> Result<(), PkiError> {
    let chars = text.chars().count();
    if chars == 0 {
        return Err(invalid(format!("{what} must not be empty")));
    }
    if chars > max {
        return Err(invalid(format!("{what} is {chars} characters; at most {max}")));
    }
    if text.chars().any(char::is_control) {
        return Err(invalid(format!("{what} {text:?} contains control characters")));
    }
    Ok(())
}

/// A DNS name as a certificate may hold it: letters, digits and hyphens in labels of 1
/// to 63 characters, optionally a leading `*` label.
fn check_dns_name(name: &str) -> Result<(), PkiError> {
    let bad = |why: &str| invalid(format!("DNS name {name:?} {why}"));
    if name.is_empty() || name.len() > DNS_NAME_BYTES_MAX {
        return Err(bad(&format!("must be 1 to {DNS_NAME_BYTES_MAX} bytes")));
    }
    let labels: Vec<&str> = name.strip_suffix('.').unwrap_or(name).split('.').collect();
    for (i, label) in labels.iter().enumerate() {
        if i == 0 && *label == "*" && labels.len() > 1 {
            continue;
        }
        if label.is_empty() || label.len() > 63 {
            return Err(bad("has a label that is empty or over 63 characters"));
        }
        if !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            || label.starts_with('-')
            || label.ends_with('-')
        {
            return Err(bad("may hold only letters, digits and inner hyphens in each label"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> CertSpec {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000);
        CertSpec::new("replica-0", Validity::from_now(now, Duration::from_secs(3600)))
    }

    /// A plain spec passes; each bound is enforced with a message naming it.
    #[test]
    fn bounds_are_checked() {
        spec().check().unwrap();
        let cases: Vec<(CertSpec, &str)> = vec![
            (CertSpec { common_name: String::new(), ..spec() }, "must not be empty"),
            (CertSpec { common_name: "x".repeat(65), ..spec() }, "at most 64"),
            (CertSpec { common_name: "a\nb".into(), ..spec() }, "control characters"),
            (CertSpec { groups: vec!["g".into(); 33], ..spec() }, "at most 32"),
            (spec().group(""), "must not be empty"),
            (spec().dns("bad_name.example"), "letters, digits"),
            (spec().dns("-a.example"), "letters, digits"),
            (spec().dns("a..example"), "empty"),
            (spec().dns(format!("{}.example", "a".repeat(64))), "over 63"),
            (CertSpec { server: false, client: false, ..spec() }, "server use, client use"),
            (CertSpec { not_after: spec().not_before, ..spec() }, "later than"),
        ];
        for (spec, expected) in cases {
            let err = spec.check().unwrap_err();
            assert!(err.to_string().contains(expected), "{spec:?}: {err}");
        }
    }

    /// Wildcards, trailing dots and ordinary service names are valid DNS names.
    #[test]
    fn dns_names() {
        for name in ["localhost", "*.plait.default.svc", "plait-0.plait.default.svc.cluster.local."] {
            spec().dns(name).check().unwrap();
        }
        assert!(spec().dns("*").check().is_err());
        assert!(spec().dns("a.*.example").check().is_err());
    }

    /// The start is backdated by the clock skew allowance; the end is `now + duration`.
    #[test]
    fn validity_from_now() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let validity = Validity::from_now(now, Duration::from_secs(60));
        assert_eq!(validity.not_before, now - CLOCK_SKEW);
        assert_eq!(validity.not_after, now + Duration::from_secs(60));
    }
}
