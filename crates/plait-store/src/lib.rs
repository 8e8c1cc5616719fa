//! The fjall-backed store of a replica: entries, seq numbers, heads, pending entries and
//! materialized views, written atomically with group commit.
//!
//! One `fjall::Database` per data directory. All writes go through one writer thread
//! (`writer`), which batches concurrent requests into one atomic `OwnedWriteBatch` and
//! one fsync, and acknowledges only after the fsync. Reads go straight to fjall from any
//! thread; they are blocking calls, so async callers run them on blocking threads.

mod consumers;
mod disk;
mod error;
mod filter;
mod history;
mod integrity;
mod keys;
mod migrate;
mod origins;
mod reads;
mod repair;
mod snapshots;
mod store;
#[cfg(test)]
mod test_support;
mod writer;

pub use consumers::{
    CONSUMER_NAME_MAX, CONSUMERS_PER_LOG_DEFAULT, Consumer, ConsumerLag, ConsumerLags, check_consumer_name,
};
pub use error::{StoreError, StoreResult};
pub use history::{AsOf, Version, VersionPage, WriterEntry, WriterPage};
pub use integrity::IntegrityReport;
pub use origins::{Origin, OriginRun};
pub use reads::{Direction, EdgePage, EdgeRow, FeedPage, FeedRow, KvRow, PageLimit, StoredEntry};
pub use repair::SEQ_GAPS_MAX;
pub use snapshots::{ImportReport, RestoreKind};
pub use store::{
    Change, Creator, Cursor, DISK_FREE_MIN_BYTES, ENGINE_THREADS_DEFAULT, FORMAT_VERSION, FaultInjector,
    IngestSource, LogSummary, MEMTABLES_BYTES_MAX, Members, NoopObserver, PROVENANCE_RANGES_MAX, PulledRange,
    RestoreMark, Store, StoreConfig, StoreObserver, SubmitOutcome, WRITE_BUFFER_BYTES_DEFAULT, WriteAck,
};
