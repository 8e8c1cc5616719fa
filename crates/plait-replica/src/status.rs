//! The one place where errors become gRPC statuses.

use plait_core::{DecodeError, VerifyError};
use plait_proto::ConversionError;
use plait_store::StoreError;
use tonic::Status;

pub(crate) fn from_store(e: StoreError) -> Status {
    match e {
        StoreError::Invalid(m) => Status::invalid_argument(m),
        StoreError::NotFound(m) => Status::not_found(m),
        StoreError::AlreadyExists(m) => Status::already_exists(m),
        StoreError::PermissionDenied(m) => Status::permission_denied(m),
        StoreError::FailedPrecondition(m) => Status::failed_precondition(m),
        StoreError::ResourceExhausted(m) => Status::resource_exhausted(m),
        StoreError::Unavailable(m) => Status::unavailable(m),
        e @ (StoreError::Corrupt(_) | StoreError::Engine(_) | StoreError::Internal(_)) => {
            tracing::error!(error = %e, "storage failure");
            Status::internal(e.to_string())
        }
    }
}

pub(crate) fn from_conversion(e: ConversionError) -> Status {
    Status::invalid_argument(e.to_string())
}

pub(crate) fn from_decode(what: &str, e: DecodeError) -> Status {
    Status::invalid_argument(format!("{what}: {e}"))
}

pub(crate) fn from_verify(what: &str, e: VerifyError) -> Status {
    Status::invalid_argument(format!("{what}: {e}"))
}

/// A blocking task that panicked or was cancelled.
pub(crate) fn from_join(e: tokio::task::JoinError) -> Status {
    tracing::error!(error = %e, "blocking task failed");
    Status::internal("internal error while reading the store")
}
