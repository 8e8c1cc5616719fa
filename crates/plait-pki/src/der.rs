//! The one step rcgen cannot do: a subject with several O values.
//!
//! rcgen keeps a distinguished name as a map from attribute type to one value, so a
//! subject can hold one organization at most, while Plait's groups are the subject's O
//! values, any number of them. So the CA lets rcgen build and sign the certificate with
//! the CN alone, then replaces the subject (and, for a CA loaded from PEM, the issuer,
//! with the CA's subject byte for byte, which is what chain building compares) in the
//! to-be-signed part and signs that again with the CA key. Everything else (validity,
//! key, extensions, algorithm) stays as rcgen wrote it.

use rcgen::SigningKey;
use yasna::models::ObjectIdentifier;

use crate::error::PkiError;

/// id-at-commonName.
const OID_COMMON_NAME: &[u64] = &[2, 5, 4, 3];
/// id-at-organizationName.
const OID_ORGANIZATION: &[u64] = &[2, 5, 4, 10];

/// Where issuer and subject sit among the TBSCertificate's elements: version, serial,
/// signature algorithm, issuer, validity, subject, ...
const TBS_ISSUER: usize = 3;
const TBS_SUBJECT: usize = 5;

/// The DER of a subject with `common_name` and one O per group, each its own RDN, all
/// UTF8String.
pub(crate) fn subject_name(common_name: &str, groups: &[String]) -> Vec<u8> {
    yasna::construct_der(|writer| {
        writer.write_sequence(|writer| {
            let attributes = std::iter::once((OID_COMMON_NAME, common_name))
                .chain(groups.iter().map(|g| (OID_ORGANIZATION, g.as_str())));
            for (oid, value) in attributes {
                writer.next().write_set(|writer| {
                    writer.next().write_sequence(|writer| {
                        writer.next().write_oid(&ObjectIdentifier::from_slice(oid));
                        writer.next().write_utf8_string(value);
                    });
                });
            }
        });
    })
}

/// The top-level elements of a DER SEQUENCE, each as its own DER.
fn sequence_elements(der: &[u8]) -> Result<Vec<Vec<u8>>, PkiError> {
    yasna::parse_der(der, |reader| {
        let mut elements = Vec::new();
        reader.read_sequence_of(|reader| {
            elements.push(reader.read_der()?);
            Ok(())
        })?;
        Ok(elements)
    })
    .map_err(|e| PkiError::Generate(format!("the certificate to re-sign does not parse: {e}")))
}

/// `certificate` with its subject (and issuer, if given) replaced, signed again with
/// `key`.
pub(crate) fn resign(
    certificate: &[u8],
    subject: &[u8],
    issuer: Option<&[u8]>,
    key: &impl SigningKey,
) -> Result<Vec<u8>, PkiError> {
    let outer = sequence_elements(certificate)?;
    let [tbs, algorithm, _signature] = outer.as_slice() else {
        return Err(PkiError::Generate(format!("the certificate has {} parts, not 3", outer.len())));
    };
    let mut fields = sequence_elements(tbs)?;
    if fields.len() <= TBS_SUBJECT {
        return Err(PkiError::Generate(format!("the certificate's TBS has only {} fields", fields.len())));
    }
    fields[TBS_SUBJECT] = subject.to_vec();
    if let Some(issuer) = issuer {
        fields[TBS_ISSUER] = issuer.to_vec();
    }
    let tbs = yasna::construct_der(|writer| {
        writer.write_sequence(|writer| {
            for field in &fields {
                writer.next().write_der(field);
            }
        });
    });
    let signature = key.sign(&tbs)?;
    Ok(yasna::construct_der(|writer| {
        writer.write_sequence(|writer| {
            writer.next().write_der(&tbs);
            writer.next().write_der(algorithm);
            writer.next().write_bitvec_bytes(&signature, signature.len() * 8);
        });
    }))
}
