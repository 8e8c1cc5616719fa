//! The cluster CA: a self-signed ECDSA P-256 certificate that signs replicas' and
//! clients' certificates.

use std::time::SystemTime;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::der;
use crate::error::PkiError;
use crate::parse::{self, certs_from_pem};
use crate::spec::{COMMON_NAME_CHARS_MAX, CertSpec, Validity, check_text};

/// A certificate authority that can issue certificates.
///
/// Holds the CA's private key; its `Debug` form leaves the key out.
pub struct Ca {
    cert_pem: String,
    cert_der: Vec<u8>,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate's subject exactly as encoded, written as every issued
    /// certificate's issuer: chain building matches the two byte for byte.
    subject_der: Vec<u8>,
    common_name: String,
    validity: Validity,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("common_name", &self.common_name)
            .field("validity", &self.validity)
            .finish_non_exhaustive()
    }
}

/// A certificate issued by a [`Ca`] with its new private key.
#[derive(Clone)]
pub struct IssuedCert {
    cert_pem: String,
    cert_der: Vec<u8>,
    key_pem: String,
}

impl std::fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCert").field("cert_pem", &self.cert_pem).finish_non_exhaustive()
    }
}

impl IssuedCert {
    /// The certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The private key, PKCS#8 PEM. A secret: write it with mode 0600.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }
}

fn pem_of(tag: &str, der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new(tag, der),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

fn system_time_to_offset(time: SystemTime) -> time::OffsetDateTime {
    time::OffsetDateTime::from(time)
}

fn new_key() -> Result<KeyPair, PkiError> {
    Ok(KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?)
}

fn common_name_only(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, DnValue::Utf8String(common_name.to_owned()));
    name
}

impl Ca {
    /// A new CA with a fresh key, named `common_name`, valid for `validity`. It may sign
    /// end-entity certificates only (path length 0), not further CAs.
    pub fn generate(common_name: &str, validity: Validity) -> Result<Ca, PkiError> {
        check_text("the CA's common name", common_name, COMMON_NAME_CHARS_MAX)?;
        validity.check()?;
        let key = new_key()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name_only(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        params.not_before = system_time_to_offset(validity.not_before);
        params.not_after = system_time_to_offset(validity.not_after);
        let cert = params.self_signed(&key)?;
        let cert_der = cert.der().to_vec();
        let subject_der = raw_subject(&cert_der)?;
        let key_pem = key.serialize_pem();
        Ok(Ca {
            cert_pem: pem_of("CERTIFICATE", &cert_der),
            cert_der,
            key_pem,
            issuer: Issuer::new(params, key),
            subject_der,
            common_name: common_name.to_owned(),
            validity: parse::validity_of(cert.der())?,
        })
    }

    /// A CA from its certificate and private key (PKCS#8 PEM), as [`Ca::cert_pem`] and
    /// [`Ca::key_pem`] wrote them or from another tool. The certificate must be a CA
    /// (basic constraints CA:true) and the key its own.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca, PkiError> {
        let certs = certs_from_pem(cert_pem.as_bytes())?;
        let [cert_der] = certs.as_slice() else {
            return Err(PkiError::Ca(format!(
                "the CA certificate file holds {} certificates; expected the CA certificate alone",
                certs.len()
            )));
        };
        let key = KeyPair::from_pem(key_pem).map_err(|e| {
            PkiError::Ca(format!("the CA key is not a PKCS#8 PEM private key rcgen can use: {e}"))
        })?;
        let (rest, cert) = X509Certificate::from_der(cert_der)
            .map_err(|e| PkiError::Certificate(format!("the CA certificate does not parse: {e}")))?;
        if !rest.is_empty() {
            return Err(PkiError::Certificate("the CA certificate has trailing bytes".into()));
        }
        if !cert.is_ca() {
            return Err(PkiError::Ca("the certificate is not a CA (no basic constraints CA:true)".into()));
        }
        if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(PkiError::Ca("the key is not the CA certificate's key".into()));
        }
        let common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .unwrap_or_default()
            .to_owned();
        let subject_der = cert.tbs_certificate.subject.as_raw().to_vec();
        let validity = parse::validity_of(cert_der)?;
        let issuer = Issuer::from_ca_cert_der(cert_der, key)
            .map_err(|e| PkiError::Ca(format!("cannot sign with this CA certificate: {e}")))?;
        Ok(Ca {
            cert_pem: pem_of("CERTIFICATE", cert_der),
            cert_der: cert_der.to_vec(),
            key_pem: key_pem.to_owned(),
            issuer,
            subject_der,
            common_name,
            validity,
        })
    }

    /// The CA certificate, PEM: what servers and clients trust.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The CA's private key, PKCS#8 PEM. A secret: write it with mode 0600.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The CA's subject CN.
    pub fn common_name(&self) -> &str {
        &self.common_name
    }

    /// When the CA certificate is valid.
    pub fn validity(&self) -> Validity {
        self.validity
    }

    /// Issues a certificate for `spec` with a fresh ECDSA P-256 key. The certificate may
    /// not outlive the CA.
    pub fn issue(&self, spec: &CertSpec) -> Result<IssuedCert, PkiError> {
        spec.check()?;
        if spec.not_after > self.validity.not_after {
            return Err(PkiError::InvalidSpec(
                "the certificate would outlive its CA: ask for fewer days or make a new CA".into(),
            ));
        }
        let key = new_key()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name_only(&spec.common_name);
        params.subject_alt_names = spec
            .dns_names
            .iter()
            .map(|name| {
                rcgen::string::Ia5String::try_from(name.as_str())
                    .map(SanType::DnsName)
                    .map_err(|e| PkiError::InvalidSpec(format!("DNS name {name:?}: {e}")))
            })
            .chain(spec.ip_addresses.iter().map(|ip| Ok(SanType::IpAddress(*ip))))
            .collect::<Result<_, _>>()?;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if spec.server {
            params.extended_key_usages.push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if spec.client {
            params.extended_key_usages.push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        params.use_authority_key_identifier_extension = true;
        params.not_before = system_time_to_offset(spec.not_before);
        params.not_after = system_time_to_offset(spec.not_after);
        let cert = params.signed_by(&key, &self.issuer)?;
        let subject = der::subject_name(&spec.common_name, &spec.groups);
        let cert_der = der::resign(cert.der(), &subject, Some(&self.subject_der), self.issuer.key())?;
        Ok(IssuedCert { cert_pem: pem_of("CERTIFICATE", &cert_der), cert_der, key_pem: key.serialize_pem() })
    }
}

fn raw_subject(cert_der: &[u8]) -> Result<Vec<u8>, PkiError> {
    let (_, cert) = X509Certificate::from_der(cert_der)
        .map_err(|e| PkiError::Generate(format!("the new CA certificate does not parse: {e}")))?;
    Ok(cert.tbs_certificate.subject.as_raw().to_vec())
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::sync::Arc;
    use std::time::{Duration, UNIX_EPOCH};

    use rustls::client::danger::ServerCertVerifier;
    use rustls::client::{VerifierBuilderError, WebPkiServerVerifier};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::server::WebPkiClientVerifier;
    use rustls::server::danger::ClientCertVerifier;
    use rustls::{CertificateError, RootCertStore};

    use super::*;
    use crate::{Subject, private_key_from_pem, subject_of, validity_of};

    const DAY: Duration = Duration::from_secs(86_400);

    /// A fixed "now" in whole seconds, so dates compare exactly.
    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_750_000_000)
    }

    fn ca() -> Ca {
        Ca::generate("test cluster CA", Validity::from_now(now(), 3650 * DAY)).unwrap()
    }

    fn roots(ca: &Ca) -> Arc<RootCertStore> {
        let mut roots = RootCertStore::empty();
        roots.add(CertificateDer::from(ca.cert_der().to_vec())).unwrap();
        Arc::new(roots)
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn server_verifier(ca: &Ca) -> Arc<WebPkiServerVerifier> {
        WebPkiServerVerifier::builder_with_provider(roots(ca), provider()).build().unwrap()
    }

    fn client_verifier(ca: &Ca) -> Result<Arc<dyn ClientCertVerifier>, VerifierBuilderError> {
        WebPkiClientVerifier::builder_with_provider(roots(ca), provider()).build()
    }

    fn unix(time: SystemTime) -> UnixTime {
        UnixTime::since_unix_epoch(time.duration_since(UNIX_EPOCH).unwrap())
    }

    /// Verifies `cert` as the server `name` at `at`.
    fn verify_server(ca: &Ca, cert: &IssuedCert, name: &str, at: SystemTime) -> Result<(), rustls::Error> {
        let der = CertificateDer::from(cert.cert_der().to_vec());
        let name = ServerName::try_from(name.to_owned()).unwrap();
        server_verifier(ca).verify_server_cert(&der, &[], &name, &[], unix(at)).map(|_| ())
    }

    /// Verifies `cert` as a client certificate at `at`.
    fn verify_client(ca: &Ca, cert: &IssuedCert, at: SystemTime) -> Result<(), rustls::Error> {
        let der = CertificateDer::from(cert.cert_der().to_vec());
        client_verifier(ca).unwrap().verify_client_cert(&der, &[], unix(at)).map(|_| ())
    }

    fn replica_spec() -> CertSpec {
        CertSpec::new("replica-0", Validity::from_now(now(), 365 * DAY))
            .group(crate::GROUP_PEERS)
            .dns("localhost")
            .dns("*.plait.default.svc")
            .ip(IpAddr::from([127, 0, 0, 1]))
    }

    /// A server+client certificate chains to its CA as a server for each of its names
    /// and addresses, and as a client; a name it does not hold is refused.
    #[test]
    fn issued_certificates_chain_to_the_ca() {
        let ca = ca();
        let cert = ca.issue(&replica_spec()).unwrap();
        let at = now() + DAY;
        for name in ["localhost", "plait-0.plait.default.svc", "127.0.0.1"] {
            verify_server(&ca, &cert, name, at).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        verify_client(&ca, &cert, at).unwrap();
        let err = verify_server(&ca, &cert, "other.example", at).unwrap_err();
        assert!(
            matches!(
                err,
                rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
                )
            ),
            "{err:?}"
        );
    }

    /// A certificate from another CA is refused as of an unknown issuer, as server and
    /// as client; from another CA of the same name, as badly signed.
    #[test]
    fn another_cas_certificate_is_untrusted() {
        let ca = ca();
        let other = Ca::generate("other CA", Validity::from_now(now(), 3650 * DAY)).unwrap();
        let cert = other.issue(&replica_spec()).unwrap();
        let at = now() + DAY;
        let err = verify_server(&ca, &cert, "localhost", at).unwrap_err();
        assert_eq!(err, rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer));
        let err = verify_client(&ca, &cert, at).unwrap_err();
        assert_eq!(err, rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer));

        let namesake = self::ca().issue(&replica_spec()).unwrap();
        let err = verify_server(&ca, &namesake, "localhost", at).unwrap_err();
        assert_eq!(err, rustls::Error::InvalidCertificate(CertificateError::BadSignature));
    }

    /// A client-only certificate verifies as a client and is refused as a server; a
    /// server-only one the other way round.
    #[test]
    fn usages_are_enforced() {
        let ca = ca();
        let at = now() + DAY;
        let client = ca.issue(&replica_spec().client_only()).unwrap();
        verify_client(&ca, &client, at).unwrap();
        assert!(verify_server(&ca, &client, "localhost", at).is_err());
        let server = ca.issue(&replica_spec().server_only()).unwrap();
        verify_server(&ca, &server, "localhost", at).unwrap();
        assert!(verify_client(&ca, &server, at).is_err());
    }

    /// The CN and every group come back out of the certificate in order, non-ASCII
    /// included.
    #[test]
    fn subject_round_trips() {
        let ca = ca();
        let spec = CertSpec::new("zoë@example", Validity::from_now(now(), DAY))
            .group("plait:admins")
            .group("team-ü")
            .group("plait:peers")
            .client_only();
        let cert = ca.issue(&spec).unwrap();
        assert_eq!(
            subject_of(cert.cert_der()).unwrap(),
            Subject {
                common_name: "zoë@example".into(),
                groups: vec!["plait:admins".into(), "team-ü".into(), "plait:peers".into()],
            }
        );
        verify_client(&ca, &cert, now() + Duration::from_secs(60)).unwrap();
        let no_groups = ca.issue(&CertSpec::new("bob", Validity::from_now(now(), DAY))).unwrap();
        assert_eq!(subject_of(no_groups.cert_der()).unwrap().groups, Vec::<String>::new());
    }

    /// A spec already expired gives a certificate with exactly those dates, which a
    /// verifier refuses as expired; one that starts later is refused as not yet valid.
    #[test]
    fn expired_and_not_yet_valid_dates() {
        let ca = ca();
        let expired = Validity { not_before: now() - 2 * DAY, not_after: now() - DAY };
        let mut spec = replica_spec();
        (spec.not_before, spec.not_after) = (expired.not_before, expired.not_after);
        let cert = ca.issue(&spec).unwrap();
        assert_eq!(validity_of(cert.cert_der()).unwrap(), expired);
        let err = verify_server(&ca, &cert, "localhost", now()).unwrap_err();
        assert!(
            matches!(
                err,
                rustls::Error::InvalidCertificate(
                    CertificateError::Expired | CertificateError::ExpiredContext { .. }
                )
            ),
            "{err:?}"
        );

        let later = Validity { not_before: now() + DAY, not_after: now() + 2 * DAY };
        (spec.not_before, spec.not_after) = (later.not_before, later.not_after);
        let cert = ca.issue(&spec).unwrap();
        assert_eq!(validity_of(cert.cert_der()).unwrap(), later);
        let err = verify_client(&ca, &cert, now()).unwrap_err();
        assert!(
            matches!(
                err,
                rustls::Error::InvalidCertificate(
                    CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. }
                )
            ),
            "{err:?}"
        );
    }

    /// Keys are PKCS#8 PEM; the CA's dates are the ones asked for.
    #[test]
    fn keys_and_ca_dates() {
        let ca = ca();
        let cert = ca.issue(&replica_spec()).unwrap();
        for key in [ca.key_pem(), cert.key_pem()] {
            assert!(key.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{key}");
            assert!(matches!(
                private_key_from_pem(key.as_bytes()).unwrap(),
                rustls::pki_types::PrivateKeyDer::Pkcs8(_)
            ));
        }
        assert!(cert.cert_pem().starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert_eq!(ca.validity(), Validity::from_now(now(), 3650 * DAY));
        assert_eq!(ca.common_name(), "test cluster CA");
        assert!(!format!("{ca:?}").contains("PRIVATE"), "Debug must not show the key");
        assert!(!format!("{cert:?}").contains("PRIVATE"), "Debug must not show the key");
    }

    /// A CA read back from its PEM files issues certificates that chain to the original
    /// CA certificate; a key that is not the CA's, or a certificate that is not a CA, is
    /// refused.
    #[test]
    fn ca_from_pem() {
        let original = ca();
        let loaded = Ca::from_pem(original.cert_pem(), original.key_pem()).unwrap();
        assert_eq!(loaded.cert_der(), original.cert_der());
        assert_eq!(loaded.common_name(), original.common_name());
        assert_eq!(loaded.validity(), original.validity());
        let cert = loaded.issue(&replica_spec()).unwrap();
        verify_server(&original, &cert, "localhost", now() + DAY).unwrap();

        let other = ca();
        let err = Ca::from_pem(original.cert_pem(), other.key_pem()).unwrap_err();
        assert!(matches!(err, PkiError::Ca(_)), "{err}");
        let err = Ca::from_pem(cert.cert_pem(), cert.key_pem()).unwrap_err();
        assert!(err.to_string().contains("not a CA"), "{err}");
        let both = format!("{}{}", original.cert_pem(), other.cert_pem());
        let err = Ca::from_pem(&both, original.key_pem()).unwrap_err();
        assert!(err.to_string().contains("holds 2 certificates"), "{err}");
        let err = Ca::from_pem(original.cert_pem(), "not a key").unwrap_err();
        assert!(matches!(err, PkiError::Ca(_)), "{err}");
    }

    /// A certificate may not outlive its CA, and a bad spec is refused before any key
    /// is made.
    #[test]
    fn issuing_is_bounded() {
        let ca = Ca::generate("short CA", Validity::from_now(now(), DAY)).unwrap();
        let err = ca.issue(&CertSpec::new("x", Validity::from_now(now(), 2 * DAY))).unwrap_err();
        assert!(err.to_string().contains("outlive its CA"), "{err}");
        let err = ca.issue(&CertSpec::new("", Validity::from_now(now(), DAY))).unwrap_err();
        assert!(matches!(err, PkiError::InvalidSpec(_)), "{err}");
        let err = Ca::generate("", Validity::from_now(now(), DAY)).unwrap_err();
        assert!(matches!(err, PkiError::InvalidSpec(_)), "{err}");
    }
}
