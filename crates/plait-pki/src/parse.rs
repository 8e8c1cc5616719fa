//! Reading certificates and keys: PEM files into DER, and a verified certificate into
//! the identity it carries.
//!
//! [`subject_of`] reads; it does not verify. The TLS layer verifies the chain first, and
//! hands over the leaf it accepted.

use std::time::{Duration, UNIX_EPOCH};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::error::PkiError;
use crate::spec::{GROUPS_MAX, Validity};

/// Largest PEM input read, in bytes: far more than any certificate bundle needs.
pub const PEM_BYTES_MAX: usize = 1024 * 1024;
/// Largest DER certificate read, in bytes.
pub const CERT_DER_BYTES_MAX: usize = 64 * 1024;
/// Longest subject value read, in bytes.
const SUBJECT_VALUE_BYTES_MAX: usize = 1024;

/// Who a certificate names: its principal name and groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// The subject CN.
    pub common_name: String,
    /// The subject O values, in the order the certificate lists them.
    pub groups: Vec<String>,
}

fn parse_certificate(der: &[u8]) -> Result<X509Certificate<'_>, PkiError> {
    if der.len() > CERT_DER_BYTES_MAX {
        return Err(PkiError::Certificate(format!(
            "{} bytes; at most {CERT_DER_BYTES_MAX} are read",
            der.len()
        )));
    }
    let (rest, cert) = X509Certificate::from_der(der).map_err(|e| PkiError::Certificate(e.to_string()))?;
    if !rest.is_empty() {
        return Err(PkiError::Certificate(format!("{} bytes after the certificate", rest.len())));
    }
    Ok(cert)
}

/// The subject CN and O values of a DER certificate. Refused: no CN, more than one CN
/// (the name would be ambiguous), values that are not strings (UTF8String,
/// PrintableString, IA5String) or hold control characters, more than
/// [`GROUPS_MAX`] groups.
pub fn subject_of(cert_der: &[u8]) -> Result<Subject, PkiError> {
    let cert = parse_certificate(cert_der)?;
    let read = |what: &str, attribute: &x509_parser::x509::AttributeTypeAndValue<'_>| {
        let value = attribute.as_str().map_err(|_| {
            PkiError::Certificate(format!(
                "the subject {what} is not a UTF8String, PrintableString or IA5String"
            ))
        })?;
        if value.len() > SUBJECT_VALUE_BYTES_MAX || value.chars().any(char::is_control) {
            return Err(PkiError::Certificate(format!(
                "the subject {what} is over {SUBJECT_VALUE_BYTES_MAX} bytes or holds control characters"
            )));
        }
        Ok(value.to_owned())
    };
    let names: Vec<String> =
        cert.subject().iter_common_name().map(|cn| read("CN", cn)).collect::<Result<_, _>>()?;
    let common_name = match names.as_slice() {
        [name] => name.clone(),
        [] => return Err(PkiError::Certificate("the subject has no CN (common name)".into())),
        more => {
            return Err(PkiError::Certificate(format!(
                "the subject has {} CNs; the principal's name would be ambiguous",
                more.len()
            )));
        }
    };
    let groups: Vec<String> =
        cert.subject().iter_organization().map(|o| read("O", o)).collect::<Result<_, _>>()?;
    if groups.len() > GROUPS_MAX {
        return Err(PkiError::Certificate(format!(
            "the subject has {} O values (groups); at most {GROUPS_MAX}",
            groups.len()
        )));
    }
    Ok(Subject { common_name, groups })
}

/// When a DER certificate is valid, to the second.
pub fn validity_of(cert_der: &[u8]) -> Result<Validity, PkiError> {
    let cert = parse_certificate(cert_der)?;
    let at = |seconds: i64| {
        let magnitude = Duration::from_secs(seconds.unsigned_abs());
        if seconds >= 0 { UNIX_EPOCH + magnitude } else { UNIX_EPOCH - magnitude }
    };
    let validity = cert.validity();
    Ok(Validity {
        not_before: at(validity.not_before.timestamp()),
        not_after: at(validity.not_after.timestamp()),
    })
}

fn check_pem_size(pem: &[u8]) -> Result<(), PkiError> {
    if pem.len() > PEM_BYTES_MAX {
        return Err(PkiError::Pem(format!("{} bytes; at most {PEM_BYTES_MAX} are read", pem.len())));
    }
    Ok(())
}

/// Every certificate in a PEM bundle, in order. Refused: no CERTIFICATE block, a
/// malformed block, a certificate over [`CERT_DER_BYTES_MAX`].
pub fn certs_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    check_pem_size(pem)?;
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::Pem(format!("cannot read the certificates: {e}")))?;
    if certs.is_empty() {
        return Err(PkiError::Pem("no certificate (no BEGIN CERTIFICATE block) found".into()));
    }
    if let Some(big) = certs.iter().find(|c| c.len() > CERT_DER_BYTES_MAX) {
        return Err(PkiError::Pem(format!(
            "a certificate of {} bytes; at most {CERT_DER_BYTES_MAX}",
            big.len()
        )));
    }
    Ok(certs)
}

/// The first private key in a PEM file: PKCS#8 (`PRIVATE KEY`), SEC1 (`EC PRIVATE
/// KEY`) or PKCS#1 (`RSA PRIVATE KEY`).
pub fn private_key_from_pem(pem: &[u8]) -> Result<PrivateKeyDer<'static>, PkiError> {
    check_pem_size(pem)?;
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => {
            PkiError::Pem("no private key (no BEGIN PRIVATE KEY block) found".into())
        }
        other => PkiError::Pem(format!("cannot read the private key: {other}")),
    })
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, DistinguishedName, KeyPair};

    use super::*;

    fn self_signed(name: DistinguishedName) -> Vec<u8> {
        let mut params = CertificateParams::default();
        params.distinguished_name = name;
        params.self_signed(&KeyPair::generate().unwrap()).unwrap().der().to_vec()
    }

    /// A certificate without a CN names nobody and is refused; so are garbage, trailing
    /// bytes and oversized input.
    #[test]
    fn unusable_certificates_are_refused() {
        let no_cn = self_signed(DistinguishedName::new());
        let err = subject_of(&no_cn).unwrap_err();
        assert!(err.to_string().contains("no CN"), "{err}");

        let mut name = DistinguishedName::new();
        name.push(rcgen::DnType::CommonName, "ok");
        let mut trailing = self_signed(name);
        trailing.push(0);
        let err = subject_of(&trailing).unwrap_err();
        assert!(err.to_string().contains("1 bytes after"), "{err}");
        assert!(subject_of(b"not a certificate").is_err());
        assert!(subject_of(&vec![0x30; CERT_DER_BYTES_MAX + 1]).unwrap_err().to_string().contains("at most"));
    }

    /// A subject with two CNs is ambiguous and refused.
    #[test]
    fn two_common_names_are_refused() {
        let ca = crate::Ca::generate("ca", Validity::from_now(UNIX_EPOCH, Duration::from_secs(600))).unwrap();
        let issued = ca
            .issue(&crate::CertSpec::new("a", Validity::from_now(UNIX_EPOCH, Duration::from_secs(60))))
            .unwrap();
        // A subject of CN=a, CN=b, spliced in the way the CA splices groups.
        let subject = yasna::construct_der(|w| {
            w.write_sequence(|w| {
                for value in ["a", "b"] {
                    w.next().write_set(|w| {
                        w.next().write_sequence(|w| {
                            w.next().write_oid(&yasna::models::ObjectIdentifier::from_slice(&[2, 5, 4, 3]));
                            w.next().write_utf8_string(value);
                        })
                    })
                }
            })
        });
        let key = KeyPair::from_pem(ca.key_pem()).unwrap();
        let two = crate::der::resign(issued.cert_der(), &subject, None, &key).unwrap();
        let err = subject_of(&two).unwrap_err();
        assert!(err.to_string().contains("2 CNs"), "{err}");
    }

    /// PEM input: a bundle reads in order, and empty, malformed or oversized input is
    /// refused with what was missing.
    #[test]
    fn pem_input() {
        let ca = crate::Ca::generate("ca", Validity::from_now(UNIX_EPOCH, Duration::from_secs(600))).unwrap();
        let bundle = format!("{}{}", ca.cert_pem(), ca.cert_pem());
        assert_eq!(certs_from_pem(bundle.as_bytes()).unwrap().len(), 2);
        let err = certs_from_pem(b"").unwrap_err();
        assert!(err.to_string().contains("no certificate"), "{err}");
        let err = certs_from_pem(ca.key_pem().as_bytes()).unwrap_err();
        assert!(err.to_string().contains("no certificate"), "{err}");
        let err = private_key_from_pem(ca.cert_pem().as_bytes()).unwrap_err();
        assert!(err.to_string().contains("no private key"), "{err}");
        let big = vec![b'a'; PEM_BYTES_MAX + 1];
        assert!(certs_from_pem(&big).unwrap_err().to_string().contains("at most"));
        assert!(private_key_from_pem(&big).unwrap_err().to_string().contains("at most"));
    }
}
