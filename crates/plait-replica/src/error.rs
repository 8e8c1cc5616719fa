//! The replica's error type. Services, backups and the blocking store calls they make
//! return [`ReplicaError`]; `status.rs` turns it into a gRPC status, in one function.
//!
//! The kinds say whether retrying can help, so a client (or the operator) knows what to
//! do: `Invalid`, `NotFound`, `AlreadyExists`, `PermissionDenied` and
//! `FailedPrecondition` fail again unless something changes first;
//! `ResourceExhausted`, `Unavailable` and `DeadlineExceeded` may pass later; `Internal`
//! and `Corrupt` are this replica's fault and need a person. Every message says what to
//! check or do.

use plait_core::catalog::CatalogError;
use plait_core::{DecodeError, OpError, VerifyError};
use plait_proto::ConversionError;
use plait_store::StoreError;

/// Why a replica call failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReplicaError {
    /// The request is wrong; the same request fails the same way.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// Not allowed: an ACL refused a writer, or a backup destination refused this
    /// replica's credentials. Retrying fails until the ACL or the credentials change.
    #[error("{0}")]
    PermissionDenied(String),
    /// The caller proved no identity (or a wrong one) where the replica requires one.
    #[error("{0}")]
    Unauthenticated(String),
    /// The request is well-formed but the state it needs is not there (an epoch that
    /// changed, a delta without its base); retrying unchanged fails.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A bound was reached; the call may pass later or with less.
    #[error("{0}")]
    ResourceExhausted(String),
    /// Transient: the replica is draining or shutting down, a disk or network failed;
    /// retrying with backoff may pass.
    #[error("{0}")]
    Unavailable(String),
    /// A wait ran out. What the message says was done stays done.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// A bug or a failed task on this replica.
    #[error("{0}")]
    Internal(String),
    /// This replica's data is damaged.
    #[error("{0}")]
    Corrupt(String),
    /// A status that came in from the other end of a stream (a client's request
    /// stream failed to decode, or was cancelled): passed on as it came.
    #[error("{0}")]
    Received(tonic::Status),
}

impl ReplicaError {
    /// The same error with `context` before its message: `entries[3]: bad signature`.
    pub(crate) fn context(self, context: impl std::fmt::Display) -> ReplicaError {
        use ReplicaError::*;
        let with = |m: String| format!("{context}: {m}");
        match self {
            Invalid(m) => Invalid(with(m)),
            NotFound(m) => NotFound(with(m)),
            AlreadyExists(m) => AlreadyExists(with(m)),
            PermissionDenied(m) => PermissionDenied(with(m)),
            Unauthenticated(m) => Unauthenticated(with(m)),
            FailedPrecondition(m) => FailedPrecondition(with(m)),
            ResourceExhausted(m) => ResourceExhausted(with(m)),
            Unavailable(m) => Unavailable(with(m)),
            DeadlineExceeded(m) => DeadlineExceeded(with(m)),
            Internal(m) => Internal(with(m)),
            Corrupt(m) => Corrupt(with(m)),
            // Another party's status is passed on unchanged.
            Received(s) => Received(s),
        }
    }

    /// A local file operation failed: a full disk is a bound, anything else may be
    /// transient.
    pub(crate) fn io(what: impl std::fmt::Display, e: std::io::Error) -> ReplicaError {
        let message = format!("{what}: {e}");
        match e.kind() {
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
                ReplicaError::ResourceExhausted(message)
            }
            _ => ReplicaError::Unavailable(message),
        }
    }
}

impl From<StoreError> for ReplicaError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Invalid(m) => ReplicaError::Invalid(m),
            StoreError::NotFound(m) => ReplicaError::NotFound(m),
            StoreError::AlreadyExists(m) => ReplicaError::AlreadyExists(m),
            StoreError::PermissionDenied(m) => ReplicaError::PermissionDenied(m),
            StoreError::FailedPrecondition(m) => ReplicaError::FailedPrecondition(m),
            StoreError::ResourceExhausted(m) => ReplicaError::ResourceExhausted(m),
            StoreError::Unavailable(m) => ReplicaError::Unavailable(m),
            e @ StoreError::Corrupt(_) => ReplicaError::Corrupt(e.to_string()),
            e @ (StoreError::Engine(_) | StoreError::Internal(_)) => ReplicaError::Internal(e.to_string()),
        }
    }
}

impl From<ConversionError> for ReplicaError {
    fn from(e: ConversionError) -> Self {
        ReplicaError::Invalid(e.to_string())
    }
}

impl From<DecodeError> for ReplicaError {
    fn from(e: DecodeError) -> Self {
        ReplicaError::Invalid(e.to_string())
    }
}

impl From<VerifyError> for ReplicaError {
    fn from(e: VerifyError) -> Self {
        ReplicaError::Invalid(e.to_string())
    }
}

impl From<OpError> for ReplicaError {
    fn from(e: OpError) -> Self {
        ReplicaError::Invalid(e.to_string())
    }
}

/// A catalog read from a destination that this replica cannot use: the destination must
/// change (or this replica be upgraded) before a retry can pass.
impl From<CatalogError> for ReplicaError {
    fn from(e: CatalogError) -> Self {
        match e {
            CatalogError::TooLarge { .. } | CatalogError::TooManyEntries { .. } => {
                ReplicaError::ResourceExhausted(e.to_string())
            }
            _ => ReplicaError::FailedPrecondition(e.to_string()),
        }
    }
}

/// A blocking task that panicked or was cancelled.
impl From<tokio::task::JoinError> for ReplicaError {
    fn from(e: tokio::task::JoinError) -> Self {
        tracing::error!(error = %e, "blocking task failed");
        ReplicaError::Internal("internal error while reading the store".into())
    }
}

impl From<tonic::Status> for ReplicaError {
    fn from(status: tonic::Status) -> Self {
        ReplicaError::Received(status)
    }
}

pub(crate) type ReplicaResult<T> = Result<T, ReplicaError>;
