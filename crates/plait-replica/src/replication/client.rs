//! How this replica calls its peers and upstreams: over TLS when a peer CA is set (with
//! this replica's certificate as its client certificate), with its bearer token when it
//! has one, and with a node proof on every call once the peer's node id is known.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use anyhow::Context;
use plait_core::{PublicKey, WriterKey};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::auth::ProofMaker;
use crate::config::SecurityArgs;

/// TLS towards peers: the CA their server certificates must chain to, and this
/// replica's own certificate and key.
#[derive(Clone, Debug)]
pub(crate) struct PeerTls {
    ca: PathBuf,
    identity: Option<(PathBuf, PathBuf)>,
}

/// How to call peers, from the replica's security settings.
#[derive(Clone, Debug, Default)]
pub(crate) struct PeerClientConfig {
    tls: Option<PeerTls>,
    token: Option<Arc<str>>,
}

impl PeerClientConfig {
    pub(crate) fn from_args(args: &SecurityArgs) -> anyhow::Result<PeerClientConfig> {
        let ca = args.peer_tls_ca.clone().or_else(|| args.tls_client_ca.clone());
        let tls = ca.map(|ca| PeerTls { ca, identity: args.tls_cert.clone().zip(args.tls_key.clone()) });
        let token = match &args.peer_token_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read the peer token file {}", path.display()))?;
                let token = text.trim();
                anyhow::ensure!(!token.is_empty(), "the peer token file {} is empty", path.display());
                Some(Arc::from(token))
            }
            None => None,
        };
        Ok(PeerClientConfig { tls, token })
    }

    /// The endpoint for a peer address; TLS files are read now, so a rotated
    /// certificate is used from the next connection on.
    pub(crate) fn endpoint(&self, address: &str) -> anyhow::Result<Endpoint> {
        let url = match (address.contains("://"), &self.tls) {
            (true, _) => address.to_owned(),
            (false, Some(_)) => format!("https://{address}"),
            (false, None) => format!("http://{address}"),
        };
        let mut endpoint = Endpoint::from_shared(url)
            .with_context(|| format!("peer address {address:?} is not a valid URI"))?;
        if let Some(tls) = &self.tls {
            let ca = std::fs::read(&tls.ca)
                .with_context(|| format!("cannot read the peer CA {}", tls.ca.display()))?;
            let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
            if let Some((cert, key)) = &tls.identity {
                let cert = std::fs::read(cert).with_context(|| format!("cannot read {}", cert.display()))?;
                let key = std::fs::read(key).with_context(|| format!("cannot read {}", key.display()))?;
                config = config.identity(Identity::from_pem(cert, key));
            }
            endpoint = endpoint.tls_config(config).context("cannot configure TLS towards peers")?;
        }
        Ok(endpoint)
    }

    /// What to attach to calls on one connection to a peer.
    pub(crate) fn credentials(&self, node_key: &WriterKey) -> PeerAuth {
        PeerAuth { token: self.token.clone(), node_key: node_key.clone(), proof: Arc::default() }
    }
}

/// Adds this replica's token and, once the peer is known, its node proof to each call.
#[derive(Clone)]
pub(crate) struct PeerAuth {
    token: Option<Arc<str>>,
    node_key: WriterKey,
    proof: Arc<OnceLock<ProofMaker>>,
}

impl PeerAuth {
    /// From now on calls carry a proof addressed to `peer`.
    pub(crate) fn set_audience(&self, peer: PublicKey) {
        let _ = self.proof.set(ProofMaker::new(self.node_key.clone(), peer));
    }
}

impl Interceptor for PeerAuth {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.token
            && let Ok(value) = format!("Bearer {token}").parse()
        {
            request.metadata_mut().insert("authorization", value);
        }
        if let Some(maker) = self.proof.get() {
            maker.attach(&mut request);
        }
        Ok(request)
    }
}

/// A channel to a peer with [`PeerAuth`] on every call.
pub(crate) type PeerChannel = InterceptedService<Channel, PeerAuth>;
