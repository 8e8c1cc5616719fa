//! Key files: a writer or node key stored as 64 hex characters, readable only by the
//! owner.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, bail};
use plait_core::WriterKey;

/// Reads a key file.
pub fn read_key(path: &Path) -> anyhow::Result<WriterKey> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read key file {}", path.display()))?;
    let bytes =
        hex::decode(text.trim()).ok().and_then(|b| <[u8; 32]>::try_from(b).ok()).with_context(|| {
            format!("key file {} must hold 64 hex characters (a 32-byte ed25519 secret)", path.display())
        })?;
    Ok(WriterKey::from_secret(bytes))
}

/// Writes a new key file with mode 0600; refuses to overwrite an existing one.
pub fn write_key(path: &Path, key: &WriterKey) -> anyhow::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = match options.open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            bail!("{} already exists; not overwriting a key", path.display())
        }
        Err(e) => return Err(e).with_context(|| format!("cannot create key file {}", path.display())),
    };
    file.write_all(format!("{}\n", hex::encode(key.secret())).as_bytes())?;
    file.sync_all()?;
    Ok(())
}

/// Reads the key at `path`, or generates and persists one if there is none.
pub fn load_or_create_key(
    path: &Path,
    rng: &mut (impl rand::RngCore + rand::CryptoRng),
) -> anyhow::Result<(WriterKey, bool)> {
    if path.exists() {
        return Ok((read_key(path)?, false));
    }
    let key = WriterKey::generate(rng);
    write_key(path, &key)?;
    Ok((key, true))
}
