//! The backup catalog format: `catalog.json`, the list of every snapshot object at a
//! backup destination, oldest first. Pure: this module only decodes and encodes.
//!
//! A catalog is read from a bucket or directory that other programs may write to, and
//! what it names becomes object keys and local file names, so decoding checks every field
//! (ids are hex of the right length, keys and backup ids cannot climb out of their
//! directory) and refuses anything over the bounds in [`crate::limits`]. Encoding checks
//! the same, so a replica never writes a catalog it could not read back.
//!
//! The JSON shape (format 1) is the one replicas have always written:
//!
//! ```json
//! { "format": 1, "backups": [ { "backup_id": "…", "log_id": "<64 hex>", "name": "…",
//!   "kind": "full" | "delta", "key": "logs/<log id>/<backup id>.snap", "bytes": 0,
//!   "epoch": "<32 hex>", "seq": 0, "base_seq": 0, "state_root": "<64 hex>", "n_ops": 0 } ] }
//! ```
//!
//! Unknown fields are ignored, so a catalog with extra fields still reads.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::LogId;
use crate::limits::{CATALOG_BYTES_MAX, CATALOG_ENTRIES_MAX, CATALOG_KEY_BYTES_MAX};
use crate::manifest::valid_log_name;

/// The catalog format version this code writes and reads.
pub const CATALOG_FORMAT: u32 = 1;
/// Longest backup id, in bytes. Ids are `<ms since epoch, 15 digits>-<8 hex>`.
const BACKUP_ID_BYTES_MAX: usize = 64;

/// Why catalog bytes were refused, or why a catalog cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    #[error("the catalog is {len} bytes, over the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error(
        "the catalog lists {len} backups, over the limit of {max}: keep fewer full backups (retain_full) so retention prunes it"
    )]
    TooManyEntries { len: usize, max: usize },
    #[error("catalog format {0} is not supported (this build reads format {CATALOG_FORMAT})")]
    Version(u32),
    #[error("not a Plait backup catalog: {0}")]
    Malformed(String),
    #[error("backups[{index}].{field} is invalid: {why}")]
    Entry { index: usize, field: &'static str, why: String },
}

/// Whether a snapshot holds a log from its start or continues a previous one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BackupKind {
    Full,
    Delta,
}

impl BackupKind {
    /// The name the catalog and the API use.
    pub fn as_str(self) -> &'static str {
        match self {
            BackupKind::Full => "full",
            BackupKind::Delta => "delta",
        }
    }
}

impl fmt::Display for BackupKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One snapshot object at a destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogEntry {
    /// Names one backup run; every object a run writes carries it.
    pub backup_id: String,
    pub log_id: LogId,
    /// The log's name when it was backed up.
    pub name: String,
    pub kind: BackupKind,
    /// The object's key, relative to the destination's prefix.
    pub key: String,
    pub bytes: u64,
    /// The epoch of the replica that wrote it: its seqs are that replica's.
    pub epoch: [u8; 16],
    /// The checkpoint the snapshot brings a reader to.
    pub seq: u64,
    /// For a delta, the checkpoint it starts from; 0 for a full backup.
    pub base_seq: u64,
    pub state_root: [u8; 32],
    pub n_ops: u64,
}

/// Every backup at a destination, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Catalog {
    /// Who backs up here (a replica's `--backup-owner`; the operator gives each cluster
    /// `<namespace>/<name>`), claimed by the first backup that has one. A replica with
    /// another owner refuses to write here, so a cluster restored from these backups
    /// cannot add to them or apply its retention to them.
    pub owner: Option<String>,
    pub backups: Vec<CatalogEntry>,
}

/// Longest catalog owner, in bytes.
pub const OWNER_BYTES_MAX: usize = 253;

/// An owner is 1 to [`OWNER_BYTES_MAX`] letters, digits, '.', '-', '_' and '/'.
pub fn valid_owner(owner: &str) -> bool {
    !owner.is_empty()
        && owner.len() <= OWNER_BYTES_MAX
        && owner.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'/'))
}

fn check_owner(owner: Option<&str>) -> Result<(), CatalogError> {
    match owner {
        Some(owner) if !valid_owner(owner) => Err(CatalogError::Malformed(format!(
            "owner {:?} must be 1 to {OWNER_BYTES_MAX} letters, digits, '.', '-', '_' and '/'",
            short(owner)
        ))),
        _ => Ok(()),
    }
}

/// The JSON shape. Ids stay strings here so that a bad one is reported with the index
/// and field it is in, not as a bare parse error.
#[derive(Serialize, Deserialize)]
struct Wire {
    format: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
    backups: Vec<WireEntry>,
}

/// Only the format, read first: a newer format may not parse as this one at all, and
/// "format 2 is not supported" says more than "missing field".
#[derive(Deserialize)]
struct WireFormat {
    format: u32,
}

#[derive(Serialize, Deserialize)]
struct WireEntry {
    backup_id: String,
    log_id: String,
    name: String,
    kind: String,
    key: String,
    bytes: u64,
    epoch: String,
    seq: u64,
    base_seq: u64,
    state_root: String,
    n_ops: u64,
}

impl Catalog {
    pub fn new() -> Catalog {
        Catalog::default()
    }

    /// Decodes and checks `catalog.json` bytes.
    pub fn decode(bytes: &[u8]) -> Result<Catalog, CatalogError> {
        Catalog::decode_bounded(bytes, CATALOG_BYTES_MAX, CATALOG_ENTRIES_MAX)
    }

    /// [`Catalog::decode`] with the bounds as parameters, so tests can reach them cheaply.
    fn decode_bounded(bytes: &[u8], bytes_max: usize, entries_max: usize) -> Result<Catalog, CatalogError> {
        if bytes.len() > bytes_max {
            return Err(CatalogError::TooLarge { len: bytes.len(), max: bytes_max });
        }
        let malformed = |e: serde_json::Error| CatalogError::Malformed(e.to_string());
        let WireFormat { format } = serde_json::from_slice(bytes).map_err(malformed)?;
        if format != CATALOG_FORMAT {
            return Err(CatalogError::Version(format));
        }
        let wire: Wire = serde_json::from_slice(bytes).map_err(malformed)?;
        check_count(wire.backups.len(), entries_max)?;
        check_owner(wire.owner.as_deref())?;
        let backups = wire
            .backups
            .into_iter()
            .enumerate()
            .map(|(index, e)| CatalogEntry::from_wire(index, e))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Catalog { owner: wire.owner, backups })
    }

    /// Encodes the catalog (pretty-printed, for people reading a bucket). Refuses a
    /// catalog that [`Catalog::decode`] would refuse.
    pub fn encode(&self) -> Result<Vec<u8>, CatalogError> {
        check_count(self.backups.len(), CATALOG_ENTRIES_MAX)?;
        check_owner(self.owner.as_deref())?;
        let backups = self
            .backups
            .iter()
            .enumerate()
            .map(|(index, e)| {
                e.check(index)?;
                Ok(e.to_wire())
            })
            .collect::<Result<Vec<_>, CatalogError>>()?;
        let bytes =
            serde_json::to_vec_pretty(&Wire { format: CATALOG_FORMAT, owner: self.owner.clone(), backups })
                .map_err(|e| CatalogError::Malformed(e.to_string()))?;
        if bytes.len() > CATALOG_BYTES_MAX {
            return Err(CatalogError::TooLarge { len: bytes.len(), max: CATALOG_BYTES_MAX });
        }
        Ok(bytes)
    }
}

fn check_count(len: usize, max: usize) -> Result<(), CatalogError> {
    if len > max {
        return Err(CatalogError::TooManyEntries { len, max });
    }
    Ok(())
}

/// A backup id becomes part of local file names: letters, digits, '-' and '_' only, so
/// it can never name another directory.
fn valid_backup_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= BACKUP_ID_BYTES_MAX
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

/// A key is relative to the destination's prefix: segments of letters, digits, '.', '-'
/// and '_', none empty, none `.` or `..`.
fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= CATALOG_KEY_BYTES_MAX
        && key.split('/').all(|segment| {
            !segment.is_empty()
                && segment != "."
                && segment != ".."
                && segment.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        })
}

fn fixed_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let bytes = hex::decode(text).ok()?;
    <[u8; N]>::try_from(bytes).ok()
}

impl CatalogEntry {
    fn from_wire(index: usize, e: WireEntry) -> Result<CatalogEntry, CatalogError> {
        let bad = |field: &'static str, why: String| CatalogError::Entry { index, field, why };
        let log_id = LogId::from_hex(&e.log_id).map_err(|err| bad("log_id", err.to_string()))?;
        let kind = match e.kind.as_str() {
            "full" => BackupKind::Full,
            "delta" => BackupKind::Delta,
            other => return Err(bad("kind", format!("{other:?} is neither \"full\" nor \"delta\""))),
        };
        let epoch = fixed_hex::<16>(&e.epoch)
            .ok_or_else(|| bad("epoch", format!("expected 32 hex characters, got {:?}", short(&e.epoch))))?;
        let state_root = fixed_hex::<32>(&e.state_root).ok_or_else(|| {
            bad("state_root", format!("expected 64 hex characters, got {:?}", short(&e.state_root)))
        })?;
        let entry = CatalogEntry {
            backup_id: e.backup_id,
            log_id,
            name: e.name,
            kind,
            key: e.key,
            bytes: e.bytes,
            epoch,
            seq: e.seq,
            base_seq: e.base_seq,
            state_root,
            n_ops: e.n_ops,
        };
        entry.check(index)?;
        Ok(entry)
    }

    /// The checks of the fields that stay strings.
    fn check(&self, index: usize) -> Result<(), CatalogError> {
        let bad = |field: &'static str, why: String| CatalogError::Entry { index, field, why };
        if !valid_backup_id(&self.backup_id) {
            return Err(bad(
                "backup_id",
                format!(
                    "{:?} must be 1 to {BACKUP_ID_BYTES_MAX} letters, digits, '-' and '_'",
                    short(&self.backup_id)
                ),
            ));
        }
        if !valid_log_name(&self.name) {
            return Err(bad("name", format!("{:?} is not a valid log name", short(&self.name))));
        }
        if !valid_key(&self.key) {
            return Err(bad(
                "key",
                format!(
                    "{:?} must be a relative path of at most {CATALOG_KEY_BYTES_MAX} bytes: segments of letters, digits, '.', '-' and '_', none empty, '.' or '..'",
                    short(&self.key)
                ),
            ));
        }
        Ok(())
    }

    fn to_wire(&self) -> WireEntry {
        WireEntry {
            backup_id: self.backup_id.clone(),
            log_id: self.log_id.to_hex(),
            name: self.name.clone(),
            kind: self.kind.as_str().to_owned(),
            key: self.key.clone(),
            bytes: self.bytes,
            epoch: hex::encode(self.epoch),
            seq: self.seq,
            base_seq: self.base_seq,
            state_root: hex::encode(self.state_root),
            n_ops: self.n_ops,
        }
    }
}

/// At most 80 characters of a refused value, so an error message stays readable.
fn short(text: &str) -> String {
    text.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64) -> CatalogEntry {
        let log_id = LogId([7; 32]);
        CatalogEntry {
            backup_id: format!("{:015}-0a0b0c0d", 1_700_000_000_000u64 + seq),
            log_id,
            name: "orders".into(),
            kind: if seq == 1 { BackupKind::Full } else { BackupKind::Delta },
            key: format!("logs/{log_id}/{:015}-0a0b0c0d.snap", 1_700_000_000_000u64 + seq),
            bytes: 1234,
            epoch: [9; 16],
            seq,
            base_seq: seq - 1,
            state_root: [3; 32],
            n_ops: 10 * seq,
        }
    }

    /// A catalog as replicas have written it (format 1, pretty JSON) still decodes, and
    /// decoding what `encode` wrote gives the same catalog back.
    #[test]
    fn existing_catalogs_read_and_encoding_round_trips() {
        let written = r#"{
  "format": 1,
  "backups": [
    {
      "backup_id": "001700000000000-0a0b0c0d",
      "log_id": "0707070707070707070707070707070707070707070707070707070707070707",
      "name": "orders",
      "kind": "full",
      "key": "logs/0707070707070707070707070707070707070707070707070707070707070707/001700000000000-0a0b0c0d.snap",
      "bytes": 1234,
      "epoch": "09090909090909090909090909090909",
      "seq": 1,
      "base_seq": 0,
      "state_root": "0303030303030303030303030303030303030303030303030303030303030303",
      "n_ops": 10
    }
  ]
}"#;
        let catalog = Catalog::decode(written.as_bytes()).unwrap();
        assert_eq!(catalog.backups.len(), 1);
        let mut first = entry(1);
        first.backup_id = "001700000000000-0a0b0c0d".into();
        first.key = format!("logs/{}/001700000000000-0a0b0c0d.snap", first.log_id);
        first.bytes = 1234;
        assert_eq!(catalog.backups[0], first);
        assert_eq!(String::from_utf8(catalog.encode().unwrap()).unwrap(), written);

        let many = Catalog { owner: None, backups: (1..50).map(entry).collect() };
        assert_eq!(Catalog::decode(&many.encode().unwrap()).unwrap(), many);
        // An owner round-trips; a catalog without one (as older replicas wrote) has none.
        let owned = Catalog { owner: Some("shop/orders".into()), backups: vec![entry(1)] };
        assert_eq!(Catalog::decode(&owned.encode().unwrap()).unwrap(), owned);
        assert!(!String::from_utf8(many.encode().unwrap()).unwrap().contains("owner"));
        for bad in ["", "a b", "x\n", &"o".repeat(OWNER_BYTES_MAX + 1)] {
            let catalog = Catalog { owner: Some(bad.to_owned()), backups: Vec::new() };
            assert!(matches!(catalog.encode(), Err(CatalogError::Malformed(_))), "{bad:?}");
            let bytes = format!("{{\"format\": 1, \"owner\": {bad:?}, \"backups\": []}}");
            assert!(matches!(Catalog::decode(bytes.as_bytes()), Err(CatalogError::Malformed(_))), "{bad:?}");
        }
        assert_eq!(Catalog::decode(&Catalog::new().encode().unwrap()).unwrap(), Catalog::new());
    }

    /// Malformed or hostile catalogs are refused with an error naming what is wrong, and
    /// nothing that could climb out of a directory gets through.
    #[test]
    fn malformed_catalogs_are_refused() {
        let good = Catalog { owner: None, backups: vec![entry(1)] }.encode().unwrap();
        let good = String::from_utf8(good).unwrap();
        let replace = |from: &str, to: &str| {
            assert!(good.contains(from), "{from}");
            Catalog::decode(good.replacen(from, to, 1).as_bytes()).unwrap_err()
        };
        assert!(matches!(Catalog::decode(b""), Err(CatalogError::Malformed(_))));
        assert!(matches!(Catalog::decode(b"[1,2]"), Err(CatalogError::Malformed(_))));
        assert!(matches!(Catalog::decode(b"{\"format\": 1}"), Err(CatalogError::Malformed(_))));
        assert_eq!(
            Catalog::decode(b"{\"format\": 2, \"something\": \"else\"}"),
            Err(CatalogError::Version(2))
        );
        assert!(matches!(replace("\"full\"", "\"partial\""), CatalogError::Entry { field: "kind", .. }));
        assert!(matches!(replace("\"0707", "\"zz07"), CatalogError::Entry { field: "log_id", .. }));
        assert!(matches!(replace("\"0909", "\"09"), CatalogError::Entry { field: "epoch", .. }));
        assert!(matches!(replace("\"0303", "\"03"), CatalogError::Entry { field: "state_root", .. }));
        assert!(matches!(
            replace("\"001700000000001-0a0b0c0d\"", "\"../../etc\""),
            CatalogError::Entry { index: 0, field: "backup_id", .. }
        ));
        assert!(matches!(replace("\"logs/", "\"../logs/"), CatalogError::Entry { field: "key", .. }));
        assert!(matches!(replace("\"logs/", "\"/logs/"), CatalogError::Entry { field: "key", .. }));
        assert!(matches!(replace("\"orders\"", "\"\""), CatalogError::Entry { field: "name", .. }));
        assert!(matches!(replace("\"seq\": 1", "\"seq\": -1"), CatalogError::Malformed(_)));
        let message = replace("\"full\"", "\"partial\"").to_string();
        assert!(message.contains("backups[0].kind"), "{message}");
    }

    /// The bounds hold both ways: decoding refuses oversized input before parsing it,
    /// and encoding refuses a catalog that decoding would refuse.
    #[test]
    fn bounds_are_enforced() {
        let three = Catalog { owner: None, backups: (1..4).map(entry).collect() }.encode().unwrap();
        assert_eq!(
            Catalog::decode_bounded(&three, three.len() - 1, 10),
            Err(CatalogError::TooLarge { len: three.len(), max: three.len() - 1 })
        );
        assert_eq!(
            Catalog::decode_bounded(&three, three.len(), 2),
            Err(CatalogError::TooManyEntries { len: 3, max: 2 })
        );
        assert_eq!(Catalog::decode_bounded(&three, three.len(), 3).unwrap().backups.len(), 3);
        let too_many = Catalog { owner: None, backups: vec![entry(2); CATALOG_ENTRIES_MAX + 1] };
        assert!(matches!(too_many.encode(), Err(CatalogError::TooManyEntries { .. })));
        // The largest entry the checks allow, times the most entries, fits the byte bound:
        // a catalog encode accepts by count is never refused by size.
        let mut largest = entry(2);
        largest.name = "n".repeat(crate::limits::LOG_NAME_BYTES_MAX);
        largest.backup_id = "b".repeat(BACKUP_ID_BYTES_MAX);
        largest.key = "k".repeat(CATALOG_KEY_BYTES_MAX);
        (largest.bytes, largest.seq, largest.base_seq, largest.n_ops) =
            (u64::MAX, u64::MAX, u64::MAX, u64::MAX);
        let one = Catalog { owner: None, backups: vec![largest] }.encode().unwrap().len();
        assert!(one * CATALOG_ENTRIES_MAX < CATALOG_BYTES_MAX, "{one} bytes per entry");
        let mut bad = entry(1);
        bad.backup_id = "a/b".into();
        assert!(matches!(
            Catalog { owner: None, backups: vec![entry(1), bad] }.encode(),
            Err(CatalogError::Entry { index: 1, field: "backup_id", .. })
        ));
    }
}
