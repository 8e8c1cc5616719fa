//! Store errors, grouped by what the caller can do about them.

/// Why a store call failed. The kinds tell a caller whether retrying can help: `Invalid`,
/// `NotFound`, `AlreadyExists`, `PermissionDenied` and `FailedPrecondition` will fail
/// again; `ResourceExhausted` and `Unavailable` may pass later; `Corrupt` and `Internal` need a
/// person.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("{0}")]
    Unavailable(String),
    /// A bug: a state the code means to make impossible. Nothing was stored.
    #[error("internal error: {0}")]
    Internal(String),
    #[error("data directory is corrupt: {0}")]
    Corrupt(String),
    #[error("storage engine error: {0}")]
    Engine(#[from] fjall::Error),
}

pub type StoreResult<T> = Result<T, StoreError>;

impl StoreError {
    pub(crate) fn poisoned() -> StoreError {
        StoreError::Unavailable(
            "the store is poisoned by a failed write to disk; this replica accepts no more writes and must restart"
                .into(),
        )
    }
}
