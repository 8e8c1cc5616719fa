//! How to reach a secured replica: TLS (the CA to trust, a client certificate) and a
//! bearer token.
//!
//! A replica that serves TLS is called with `https://host:port`, or with a bare
//! `host:port` once any TLS setting is given. With no CA given, an `https://` address is
//! checked against the operating system's trusted roots.

use std::path::Path;

use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::Interceptor;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::error::ClientError;

/// Largest PEM file (CA bundle, certificate chain or key) the client reads.
pub const PEM_FILE_BYTES_MAX: u64 = 1024 * 1024;

/// Largest bearer token, in bytes.
pub const TOKEN_BYTES_MAX: usize = 4096;

/// TLS and credentials for [`crate::Client::connect_with`].
///
/// ```no_run
/// # async fn example() -> Result<(), plait_client::ClientError> {
/// use plait_client::{Client, ClientOptions};
///
/// let options = ClientOptions::new()
///     .tls_ca_file("ca.crt")?
///     .token("s3cret-token")?;
/// let client = Client::connect_with("plait-0.example:7070", &options).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Default)]
pub struct ClientOptions {
    ca_pem: Option<Vec<u8>>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
    server_name: Option<String>,
    token: Option<AsciiMetadataValue>,
}

impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key or the token.
        f.debug_struct("ClientOptions")
            .field("tls_ca", &self.ca_pem.is_some())
            .field("client_certificate", &self.identity.is_some())
            .field("server_name", &self.server_name)
            .field("token", &self.token.is_some())
            .finish()
    }
}

fn read_pem(what: &str, path: &Path) -> Result<Vec<u8>, ClientError> {
    let fail =
        |e: std::io::Error| ClientError::Tls(format!("cannot read the {what} {}: {e}", path.display()));
    let len = std::fs::metadata(path).map_err(fail)?.len();
    if len > PEM_FILE_BYTES_MAX {
        return Err(ClientError::Tls(format!(
            "the {what} {} is {len} bytes, over the limit of {PEM_FILE_BYTES_MAX}: is it a PEM file?",
            path.display()
        )));
    }
    let bytes = std::fs::read(path).map_err(fail)?;
    if !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(ClientError::Tls(format!(
            "the {what} {} is not PEM (no -----BEGIN line)",
            path.display()
        )));
    }
    Ok(bytes)
}

impl ClientOptions {
    /// No TLS and no token: what [`crate::Client::connect`] uses.
    pub fn new() -> ClientOptions {
        ClientOptions::default()
    }

    /// Trust replicas whose certificates chain to these PEM CA certificates (and only
    /// those). Turns TLS on.
    pub fn tls_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> ClientOptions {
        self.ca_pem = Some(pem.into());
        self
    }

    /// [`ClientOptions::tls_ca_pem`] from a file.
    pub fn tls_ca_file(self, path: impl AsRef<Path>) -> Result<ClientOptions, ClientError> {
        let pem = read_pem("CA file", path.as_ref())?;
        Ok(self.tls_ca_pem(pem))
    }

    /// Present this client certificate (PEM chain) and key. Turns TLS on.
    pub fn client_cert_pem(mut self, cert: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> ClientOptions {
        self.identity = Some((cert.into(), key.into()));
        self
    }

    /// [`ClientOptions::client_cert_pem`] from files.
    pub fn client_cert_files(
        self,
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<ClientOptions, ClientError> {
        let cert = read_pem("client certificate", cert.as_ref())?;
        let key = read_pem("client key", key.as_ref())?;
        Ok(self.client_cert_pem(cert, key))
    }

    /// The name the replica's certificate must be valid for, when it differs from the
    /// host in the address (for example when calling through an IP address or a tunnel).
    pub fn tls_server_name(mut self, name: impl Into<String>) -> ClientOptions {
        self.server_name = Some(name.into());
        self
    }

    /// Send `authorization: Bearer <token>` on every call.
    pub fn token(mut self, token: &str) -> Result<ClientOptions, ClientError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(ClientError::Invalid("the token is empty".into()));
        }
        if token.len() > TOKEN_BYTES_MAX {
            return Err(ClientError::Invalid(format!(
                "the token is {} bytes, over the limit of {TOKEN_BYTES_MAX}",
                token.len()
            )));
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ClientError::Invalid(
                "the token must be printable ASCII without spaces (it is sent in a header)".into(),
            ));
        }
        let value = MetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|e| ClientError::Invalid(format!("the token cannot be sent in a header: {e}")))?;
        self.token = Some(value);
        Ok(self)
    }

    /// [`ClientOptions::token`] from a file (surrounding whitespace is ignored).
    pub fn token_file(self, path: impl AsRef<Path>) -> Result<ClientOptions, ClientError> {
        let path = path.as_ref();
        let fail = |e: std::io::Error| {
            ClientError::Invalid(format!("cannot read the token file {}: {e}", path.display()))
        };
        let len = std::fs::metadata(path).map_err(fail)?.len();
        if len > TOKEN_BYTES_MAX as u64 + 2 {
            return Err(ClientError::Invalid(format!(
                "the token file {} is {len} bytes, over the limit of {TOKEN_BYTES_MAX}",
                path.display()
            )));
        }
        let text = std::fs::read_to_string(path).map_err(fail)?;
        self.token(&text)
            .map_err(|e| ClientError::Invalid(format!("the token file {}: {}", path.display(), e.message())))
    }

    /// Whether any TLS setting is given, so a bare `host:port` means `https://`.
    pub fn uses_tls(&self) -> bool {
        self.ca_pem.is_some() || self.identity.is_some() || self.server_name.is_some()
    }

    /// The TLS configuration for an `https://` address.
    pub(crate) fn tls_config(&self) -> ClientTlsConfig {
        let mut config = ClientTlsConfig::new();
        config = match &self.ca_pem {
            Some(pem) => config.ca_certificate(Certificate::from_pem(pem)),
            None => config.with_native_roots(),
        };
        if let Some((cert, key)) = &self.identity {
            config = config.identity(Identity::from_pem(cert, key));
        }
        if let Some(name) = &self.server_name {
            config = config.domain_name(name.clone());
        }
        config
    }

    pub(crate) fn credentials(&self) -> Credentials {
        Credentials { token: self.token.clone() }
    }
}

/// Adds the bearer token, if any, to every call.
#[derive(Clone, Default)]
pub(crate) struct Credentials {
    token: Option<AsciiMetadataValue>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("token", &self.token.is_some()).finish()
    }
}

impl Interceptor for Credentials {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.token {
            request.metadata_mut().insert("authorization", token.clone());
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tokens are checked before anything is sent: empty, oversized or header-breaking
    /// tokens are refused with a message saying which.
    #[test]
    fn bad_tokens_are_refused() {
        assert!(ClientOptions::new().token("  ").unwrap_err().message().contains("empty"));
        let long = "x".repeat(TOKEN_BYTES_MAX + 1);
        assert!(ClientOptions::new().token(&long).unwrap_err().message().contains("over the limit"));
        assert!(ClientOptions::new().token("a b").unwrap_err().message().contains("printable"));
        assert!(ClientOptions::new().token("tok\u{e9}").unwrap_err().message().contains("printable"));
        let ok = ClientOptions::new().token(" tok-1\n").unwrap();
        assert_eq!(ok.token.unwrap().to_str().unwrap(), "Bearer tok-1");
    }

    /// The token is sent as a bearer authorization header, and only when set.
    #[test]
    fn credentials_add_the_header() {
        let mut with = ClientOptions::new().token("abc").unwrap().credentials();
        let request = with.call(tonic::Request::new(())).unwrap();
        assert_eq!(request.metadata().get("authorization").unwrap(), "Bearer abc");
        let mut without = ClientOptions::new().credentials();
        let request = without.call(tonic::Request::new(())).unwrap();
        assert!(request.metadata().get("authorization").is_none());
    }

    /// Files that are not PEM, or missing, are refused with their path.
    #[test]
    fn pem_files_are_checked() {
        let dir = std::env::temp_dir().join(format!("plait-client-pem-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let not_pem = dir.join("ca.der");
        std::fs::write(&not_pem, [0x30, 0x82, 0x01]).unwrap();
        let error = ClientOptions::new().tls_ca_file(&not_pem).unwrap_err();
        assert!(matches!(error, ClientError::Tls(_)) && error.message().contains("not PEM"), "{error}");
        let error = ClientOptions::new().tls_ca_file(dir.join("missing.crt")).unwrap_err();
        assert!(error.message().contains("missing.crt"), "{error}");
        let options = ClientOptions::new();
        assert!(!options.uses_tls());
        assert!(options.tls_server_name("plait-0").uses_tls());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Debug output never shows the token.
    #[test]
    fn debug_hides_secrets() {
        let options = ClientOptions::new().token("very-secret").unwrap();
        assert!(!format!("{options:?}").contains("very-secret"));
    }
}
