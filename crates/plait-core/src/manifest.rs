//! Log manifests: a log's name, type and write ACL, signed by its creator. The manifest
//! is the log's identity and never changes.

use std::fmt;

use ciborium::Value;

use crate::cbor::{self, bytes_value, uint_value};
use crate::error::{DecodeError, VerifyError};
use crate::ids::{LogId, PublicKey, Signature};
use crate::keys::WriterKey;
use crate::limits::{LOG_NAME_BYTES_MAX, MANIFEST_BYTES_MAX, OPTION_BYTES_MAX, OPTIONS_MAX, WRITERS_MAX};

const MANIFEST_VERSION: u64 = 1;
const LOG_ID_DOMAIN: &[u8] = b"plait/log/v1";
const SIGN_DOMAIN: &[u8] = b"plait/manifest/v1";

/// Which view a log folds its operations into, and so which operations it accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogType {
    Feed,
    Kv,
    Graph,
}

impl LogType {
    pub fn code(self) -> u64 {
        match self {
            LogType::Feed => 1,
            LogType::Kv => 2,
            LogType::Graph => 3,
        }
    }

    pub fn from_code(code: u64) -> Option<LogType> {
        match code {
            1 => Some(LogType::Feed),
            2 => Some(LogType::Kv),
            3 => Some(LogType::Graph),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            LogType::Feed => "feed",
            LogType::Kv => "kv",
            LogType::Graph => "graph",
        }
    }

    pub fn parse(s: &str) -> Option<LogType> {
        match s {
            "feed" => Some(LogType::Feed),
            "kv" => Some(LogType::Kv),
            "graph" => Some(LogType::Graph),
            _ => None,
        }
    }
}

impl fmt::Display for LogType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The write ACL.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Writers {
    /// Any valid signature may write.
    Open,
    /// Only these keys, kept sorted and unique.
    Keys(Vec<PublicKey>),
}

impl Writers {
    pub fn keys(mut keys: Vec<PublicKey>) -> Writers {
        keys.sort();
        keys.dedup();
        Writers::Keys(keys)
    }

    pub fn allows(&self, writer: &PublicKey) -> bool {
        match self {
            Writers::Open => true,
            Writers::Keys(keys) => keys.binary_search(writer).is_ok(),
        }
    }
}

/// The unsigned body of a manifest.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Manifest {
    pub name: String,
    pub log_type: LogType,
    pub writers: Writers,
    pub created_by: PublicKey,
    pub created_at_lamport: u64,
    /// Free-form settings, sorted by key, keys unique.
    pub options: Vec<(String, String)>,
}

/// Whether `name` may name a log: 1 to 128 bytes of ASCII letters, digits, '.', '-', '_'.
pub fn valid_log_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= LOG_NAME_BYTES_MAX
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        // A name that looks like a log id would be ambiguous where a log is named by either.
        && !(name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()))
}

impl Manifest {
    fn check(&self) -> Result<(), DecodeError> {
        if !valid_log_name(&self.name) {
            return Err(DecodeError::malformed(
                "manifest",
                format!(
                    "log name {:?} must be 1 to {LOG_NAME_BYTES_MAX} characters of letters, digits, '.', '-' and '_', and not 64 hex characters",
                    self.name
                ),
            ));
        }
        if let Writers::Keys(keys) = &self.writers {
            if keys.is_empty() {
                return Err(DecodeError::malformed("manifest", "a closed ACL must name at least one writer"));
            }
            if keys.len() > WRITERS_MAX {
                return Err(DecodeError::malformed("manifest", format!("more than {WRITERS_MAX} writers")));
            }
            if keys.windows(2).any(|w| w[0] >= w[1]) {
                return Err(DecodeError::malformed("manifest", "writers must be sorted without duplicates"));
            }
        }
        if self.options.len() > OPTIONS_MAX {
            return Err(DecodeError::malformed("manifest", format!("more than {OPTIONS_MAX} options")));
        }
        if self.options.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(DecodeError::malformed(
                "manifest",
                "options must be sorted by key without duplicates",
            ));
        }
        if self.options.iter().any(|(k, v)| k.len() > OPTION_BYTES_MAX || v.len() > OPTION_BYTES_MAX) {
            return Err(DecodeError::malformed(
                "manifest",
                format!("option keys and values are at most {OPTION_BYTES_MAX} bytes"),
            ));
        }
        Ok(())
    }

    fn body_items(&self) -> Vec<Value> {
        let (open, keys) = match &self.writers {
            Writers::Open => (true, Vec::new()),
            Writers::Keys(keys) => (false, keys.iter().map(|k| bytes_value(&k.0)).collect()),
        };
        vec![
            uint_value(MANIFEST_VERSION),
            Value::Text(self.name.clone()),
            uint_value(self.log_type.code()),
            Value::Bool(open),
            Value::Array(keys),
            bytes_value(&self.created_by.0),
            uint_value(self.created_at_lamport),
            Value::Array(
                self.options
                    .iter()
                    .map(|(k, v)| Value::Array(vec![Value::Text(k.clone()), Value::Text(v.clone())]))
                    .collect(),
            ),
        ]
    }

    fn body_bytes(&self) -> Vec<u8> {
        cbor::encode(&Value::Array(self.body_items()))
    }

    /// The log id: blake3 over a domain tag and the canonical body (without signature).
    pub fn log_id(&self) -> LogId {
        let mut hasher = blake3::Hasher::new();
        hasher.update(LOG_ID_DOMAIN);
        hasher.update(&self.body_bytes());
        LogId(*hasher.finalize().as_bytes())
    }

    /// Signs the manifest with the creator's key; `created_by` is set to that key.
    pub fn sign(mut self, key: &WriterKey) -> Result<SignedManifest, DecodeError> {
        self.created_by = key.public();
        self.check()?;
        let digest = signing_digest(&self.body_bytes());
        let signature = key.sign_digest(&digest);
        Ok(SignedManifest::assemble(self, signature))
    }
}

fn signing_digest(body: &[u8]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(SIGN_DOMAIN);
    hasher.update(body);
    *hasher.finalize().as_bytes()
}

/// A manifest with a verified signature, and its canonical bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedManifest {
    manifest: Manifest,
    signature: Signature,
    log_id: LogId,
    bytes: Vec<u8>,
}

impl SignedManifest {
    fn assemble(manifest: Manifest, signature: Signature) -> SignedManifest {
        let mut items = manifest.body_items();
        items.push(bytes_value(&signature.0));
        let bytes = cbor::encode(&Value::Array(items));
        let log_id = manifest.log_id();
        SignedManifest { manifest, signature, log_id, bytes }
    }

    /// Decodes canonical bytes and verifies the creator's signature.
    pub fn decode_and_verify(input: &[u8]) -> Result<SignedManifest, VerifyError> {
        const WHAT: &str = "manifest";
        if input.len() > MANIFEST_BYTES_MAX {
            return Err(
                DecodeError::TooLarge { what: WHAT, len: input.len(), max: MANIFEST_BYTES_MAX }.into()
            );
        }
        let value = cbor::decode(input)?;
        let items = cbor::array(WHAT, &value)?;
        if let Some(v) = items.first() {
            let version = cbor::uint(WHAT, "version", v)?;
            if version != MANIFEST_VERSION {
                return Err(DecodeError::Version { what: WHAT, version }.into());
            }
        }
        let mut f = cbor::Fields::new(WHAT, &value, 9)?;
        f.next();
        let name = f.text("name", LOG_NAME_BYTES_MAX)?.to_owned();
        let type_code = f.uint("type")?;
        let log_type = LogType::from_code(type_code)
            .ok_or_else(|| DecodeError::malformed(WHAT, format!("unknown log type {type_code}")))?;
        let open = f.boolean("open")?;
        let keys = f.array("writers", WRITERS_MAX)?;
        let keys = cbor::sorted_ids(WHAT, "writers", keys, PublicKey)?;
        let writers = if open {
            if !keys.is_empty() {
                return Err(DecodeError::malformed(WHAT, "an open ACL must not name writers").into());
            }
            Writers::Open
        } else {
            Writers::Keys(keys)
        };
        let created_by = PublicKey(f.fixed("created_by")?);
        let created_at_lamport = f.uint("created_at_lamport")?;
        let mut options = Vec::new();
        for pair in f.array("options", OPTIONS_MAX)? {
            let mut p = cbor::Fields::new(WHAT, pair, 2)?;
            options.push((
                p.text("option key", OPTION_BYTES_MAX)?.to_owned(),
                p.text("option value", OPTION_BYTES_MAX)?.to_owned(),
            ));
        }
        let signature = Signature(f.fixed("signature")?);
        let manifest = Manifest { name, log_type, writers, created_by, created_at_lamport, options };
        manifest.check()?;
        let signed = SignedManifest::assemble(manifest, signature);
        cbor::ensure_canonical(input, &signed.bytes)?;
        let digest = signing_digest(&signed.manifest.body_bytes());
        if !crate::entry::verify_one(&signed.manifest.created_by, &digest, &signature) {
            return Err(VerifyError::BadManifestSignature);
        }
        Ok(signed)
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn log_id(&self) -> LogId {
        self.log_id
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn signature(&self) -> Signature {
        self.signature
    }
}
