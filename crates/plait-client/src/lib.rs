//! A typed async client for Plait replicas.
//!
//! [`Client`] speaks the gRPC API of `proto/plait/v1`: logs (create, get, list, drop),
//! typed writes and the routed batch `write` (optionally waiting for more replicas,
//! [`Client::with_write_concern`]), pre-signed entries (`submit`,
//! [`Client::submit_signed`] for clients that hold their own keys), reads, subscriptions,
//! status with peers, membership ([`Client::set_members`]), drain before removal
//! ([`Client::drain`]), checkpoints, snapshots ([`Client::export_snapshot`],
//! [`Client::import_snapshot`]), backups ([`Client::backup`]) and health. Replies are
//! checked on arrival: ids, enums, ops, and entries fetched by hash are verified. Errors
//! are [`ClientError`] kinds that say whether retrying can help. A secured replica is
//! called over TLS with a client certificate or a bearer token: [`ClientOptions`] and
//! [`Client::connect_with`].
//!
//! ```no_run
//! # async fn example() -> Result<(), plait_client::ClientError> {
//! use plait_client::{Client, CreateLogOptions};
//! use plait_core::LogType;
//!
//! let client = Client::connect("127.0.0.1:7070").await?;
//! client.create_log(&CreateLogOptions::new("settings", LogType::Kv)).await?;
//! client.put("settings", "theme", "dark").await?;
//! let value = client.get("settings", "theme").await?;
//! assert_eq!(value.map(|v| v.value), Some(b"dark".to_vec()));
//! # Ok(())
//! # }
//! ```

mod client;
mod error;
mod options;
mod types;

pub use client::{
    AppliedOpStream, CONNECT_TIMEOUT, Client, DRAIN_REPLY_GRACE, KEEP_ALIVE_INTERVAL, KEEP_ALIVE_TIMEOUT,
    MESSAGE_BYTES_MAX, ServingStatus, SnapshotStream,
};
pub use error::ClientError;
pub use options::{ClientOptions, PEM_FILE_BYTES_MAX, TOKEN_BYTES_MAX};
pub use types::{
    AppliedOp, AsOf, BackupJobReport, BackupJobState, BackupKind, BackupObject, BackupReport, Caller,
    CheckpointInfo, ConsumerInfo, CreateLogOptions, Direction, DrainedLog, EPOCH_LEN, Edge, EdgePage,
    EdgesOptions, FeedItem, FeedPage, Head, Heads, HistoryPage, HistoryTarget, ImportKind, ImportReport,
    KeyValue, LogInfo, Origin, PeerLogStatus, PeerStatus, ReadFeedOptions, RoutedOp, ScanOptions, ScanPage,
    Status, StoredEntry, SubmitOutcome, SubmitResult, Version, Versioned, WriteAck, WriterEntry,
};
