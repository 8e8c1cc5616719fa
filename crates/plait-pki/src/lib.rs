//! A cluster certificate authority for Plait, and the reading of identities out of
//! certificates.
//!
//! Plait authenticates replicas and clients with TLS certificates: the principal's name
//! is the certificate's subject common name (CN), and its groups are the subject's
//! organization (O) values, as Kubernetes does (`plait:peers` for replicas,
//! `plait:admins` for administrators). This crate makes the CA that signs such
//! certificates ([`Ca::generate`], or an existing one with [`Ca::from_pem`]), issues them
//! from a [`CertSpec`] with ECDSA P-256 keys, and reads the identity back out of a DER
//! certificate the TLS layer has already verified ([`subject_of`]).
//!
//! Nothing here reads the clock: every date is the caller's ([`Validity::from_now`]
//! takes `now`). Keys come from the operating system's randomness.
//!
//! ```
//! use std::time::{Duration, UNIX_EPOCH};
//! use plait_pki::{Ca, CertSpec, Validity, subject_of};
//!
//! let now = UNIX_EPOCH + Duration::from_secs(1_750_000_000);
//! let ca = Ca::generate("plait cluster CA", Validity::from_now(now, Duration::from_secs(86400 * 3650)))?;
//! let spec = CertSpec::new("alice", Validity::from_now(now, Duration::from_secs(86400)))
//!     .group("plait:admins")
//!     .client_only();
//! let issued = ca.issue(&spec)?;
//! let subject = subject_of(issued.cert_der())?;
//! assert_eq!(subject.common_name, "alice");
//! assert_eq!(subject.groups, ["plait:admins"]);
//! # Ok::<(), plait_pki::PkiError>(())
//! ```

mod ca;
mod der;
mod error;
mod parse;
mod spec;

pub use ca::{Ca, IssuedCert};
pub use error::PkiError;
pub use parse::{
    CERT_DER_BYTES_MAX, PEM_BYTES_MAX, Subject, certs_from_pem, private_key_from_pem, subject_of, validity_of,
};
pub use spec::{
    CLOCK_SKEW, COMMON_NAME_CHARS_MAX, CertSpec, DNS_NAMES_MAX, GROUP_CHARS_MAX, GROUPS_MAX,
    IP_ADDRESSES_MAX, Validity,
};

/// The group of replicas: certificates in it may use the Sync service.
pub const GROUP_PEERS: &str = "plait:peers";

/// The group of administrators: certificates in it hold every role.
pub const GROUP_ADMINS: &str = "plait:admins";
