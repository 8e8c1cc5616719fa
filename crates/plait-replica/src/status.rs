//! The one place where errors become gRPC statuses: [`to_status`]. Everything else in
//! this crate returns [`ReplicaError`]; the services' tonic boundary converts through
//! here, so a kind always maps to the same code.

use tonic::{Response, Status};

use crate::error::{ReplicaError, ReplicaResult};

/// The gRPC status for an error. Internal and corrupt-data failures are logged here, once,
/// since the caller cannot do anything about them and an operator must see them.
pub(crate) fn to_status(e: ReplicaError) -> Status {
    match e {
        ReplicaError::Invalid(m) => Status::invalid_argument(m),
        ReplicaError::NotFound(m) => Status::not_found(m),
        ReplicaError::AlreadyExists(m) => Status::already_exists(m),
        ReplicaError::PermissionDenied(m) => Status::permission_denied(m),
        ReplicaError::Unauthenticated(m) => Status::unauthenticated(m),
        ReplicaError::FailedPrecondition(m) => Status::failed_precondition(m),
        ReplicaError::ResourceExhausted(m) => Status::resource_exhausted(m),
        ReplicaError::Unavailable(m) => Status::unavailable(m),
        ReplicaError::DeadlineExceeded(m) => Status::deadline_exceeded(m),
        ReplicaError::Internal(m) | ReplicaError::Corrupt(m) => {
            tracing::error!(error = %m, "internal or storage failure");
            Status::internal(m)
        }
        ReplicaError::Received(status) => status,
    }
}

/// Lets the tonic boundary (and stream tasks sending an error) write `?` / `.into()`;
/// it is [`to_status`].
impl From<ReplicaError> for Status {
    fn from(e: ReplicaError) -> Status {
        to_status(e)
    }
}

/// A refusal made before any handler ran (the authentication layer), as the HTTP
/// response tonic would have sent for it.
pub(crate) fn refusal(e: ReplicaError) -> http::Response<tonic::body::Body> {
    to_status(e).into_http()
}

/// The tonic boundary of a unary handler: its result as a response or a status.
pub(crate) fn reply<T>(result: ReplicaResult<T>) -> Result<Response<T>, Status> {
    result.map(Response::new).map_err(to_status)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// Every kind maps to its own code and keeps its message; a received status passes
    /// through untouched.
    #[test]
    fn kinds_map_to_codes() {
        use tonic::Code;
        let cases = [
            (ReplicaError::Invalid("m".into()), Code::InvalidArgument),
            (ReplicaError::NotFound("m".into()), Code::NotFound),
            (ReplicaError::AlreadyExists("m".into()), Code::AlreadyExists),
            (ReplicaError::PermissionDenied("m".into()), Code::PermissionDenied),
            (ReplicaError::Unauthenticated("m".into()), Code::Unauthenticated),
            (ReplicaError::FailedPrecondition("m".into()), Code::FailedPrecondition),
            (ReplicaError::ResourceExhausted("m".into()), Code::ResourceExhausted),
            (ReplicaError::Unavailable("m".into()), Code::Unavailable),
            (ReplicaError::DeadlineExceeded("m".into()), Code::DeadlineExceeded),
            (ReplicaError::Internal("m".into()), Code::Internal),
            (ReplicaError::Corrupt("m".into()), Code::Internal),
        ];
        for (e, code) in cases {
            let status = to_status(e.context("ops[1]"));
            assert_eq!((status.code(), status.message()), (code, "ops[1]: m"));
        }
        let received = Status::cancelled("the client went away");
        let passed = to_status(ReplicaError::Received(received.clone()).context("ignored"));
        assert_eq!((passed.code(), passed.message()), (received.code(), received.message()));
    }

    /// Proves the claim that errors become gRPC statuses in exactly one place: no source
    /// file of this crate other than `status.rs` calls a `Status` constructor
    /// (`Status::new`, `Status::invalid_argument`, `tonic::Status::from_error`, any
    /// `Status::` followed by a lower-case name). Naming the type in signatures is fine.
    /// A `?` from a foreign error straight into `Status` (tonic converts `io::Error`)
    /// cannot happen either: handlers return `ReplicaError`, which has no such `From`.
    #[test]
    fn statuses_are_constructed_only_here() {
        let mut offenders = Vec::new();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        collect_rust_files(&src, &mut files);
        assert!(files.len() > 10, "the walk found the sources: {files:?}");
        for file in files {
            if file == src.join("status.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&file).unwrap();
            for (n, line) in text.lines().enumerate() {
                if constructs_status(line) {
                    offenders.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
                }
            }
        }
        assert!(
            offenders.is_empty(),
            "construct statuses only in status.rs (return a ReplicaError instead):\n{}",
            offenders.join("\n")
        );
    }

    /// The matcher itself: constructors count, the type name and other types do not.
    #[test]
    fn the_status_matcher_finds_constructors() {
        for line in [
            "Err(Status::invalid_argument(\"x\"))",
            "tonic::Status::new(code, m)",
            "let s = Status::from_error(e);",
            "x.map_err(|e| Status::unavailable(e.to_string()))",
        ] {
            assert!(constructs_status(line), "{line}");
        }
        for line in [
            "-> Result<Response<pb::WriteAck>, Status> {",
            "ServingStatus::NotServing",
            "health_check_response::ServingStatus::Serving as i32",
            "e.downcast_ref::<tonic::Status>()",
            "pb::PeerStatus { address }",
        ] {
            assert!(!constructs_status(line), "{line}");
        }
    }

    fn collect_rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                collect_rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// `Status::` as a whole identifier followed by a lower-case name: an associated
    /// function, which on `tonic::Status` means a constructor.
    fn constructs_status(line: &str) -> bool {
        let code = line.split("//").next().unwrap_or_default();
        code.match_indices("Status::").any(|(at, m)| {
            let whole = code[..at].chars().next_back().is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
            let next = code[at + m.len()..].chars().next();
            whole && next.is_some_and(|c| c.is_ascii_lowercase())
        })
    }
}
