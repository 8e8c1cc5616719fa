//! What can go wrong talking to a replica, sorted by what the caller can do about it.
//!
//! gRPC status codes are mapped to [`ClientError`] kinds in exactly one place,
//! [`ClientError::from_status`], which keeps the server's message: the server words its
//! messages for people, so they are passed on as they are.

use std::error::Error as _;

use plait_proto::ConversionError;

/// An error from a Plait replica or from the connection to it.
///
/// The kind says whether retrying can help: [`ClientError::is_retryable`] is true for
/// `Unavailable`, `ResourceExhausted` and `Transport`, where the same request may succeed
/// later; the other kinds need a different request or a change of state first.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The request is malformed or out of bounds (`INVALID_ARGUMENT`, `OUT_OF_RANGE`).
    /// Fix the request; retrying it as it is cannot help.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The log, key or entry does not exist on this replica (`NOT_FOUND`).
    #[error("not found: {0}")]
    NotFound(String),
    /// A log with that name but a different manifest exists (`ALREADY_EXISTS`).
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// The writer is not in the log's ACL, or the caller is not allowed
    /// (`PERMISSION_DENIED`, `UNAUTHENTICATED`).
    #[error("permission denied: {0}")]
    Unauthorized(String),
    /// The replica's state does not allow the request now: the op does not fit the log's
    /// type, the store refuses writes, a conflicting change happened
    /// (`FAILED_PRECONDITION`, `ABORTED`). Retry only after changing that state.
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    /// A limit was hit: pending space, concurrent streams, message size
    /// (`RESOURCE_EXHAUSTED`). Retry later, or with a smaller request.
    #[error("resource exhausted: {0}")]
    ResourceExhausted(String),
    /// The replica is not serving right now or the call timed out (`UNAVAILABLE`,
    /// `DEADLINE_EXCEEDED`, `CANCELLED`). Retrying, here or at another replica, can help.
    /// A write that timed out may or may not have landed.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Stored data or the server's reply failed verification (`DATA_LOSS`, or a reply
    /// whose ids, enums or entries do not check out). Do not trust that replica's answer.
    #[error("corrupt: {0}")]
    Corrupt(String),
    /// The server failed or does not implement the call (`INTERNAL`, `UNKNOWN`,
    /// `UNIMPLEMENTED`). A bug or a version mismatch; retrying rarely helps.
    #[error("server error: {0}")]
    Internal(String),
    /// No connection could be made: bad address, refused, timed out.
    #[error("transport: {0}")]
    Transport(String),
    /// TLS failed: the replica's certificate is not trusted (wrong CA, expired, not yet
    /// valid, another name), the replica refused this client's certificate, or one side
    /// speaks TLS and the other does not. Fix the certificates or the address; retrying as
    /// it is cannot help.
    #[error("tls: {0}")]
    Tls(String),
}

impl ClientError {
    /// Whether the same request may succeed if sent again later.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ClientError::Unavailable(_) | ClientError::ResourceExhausted(_) | ClientError::Transport(_)
        )
    }

    /// The message without the kind in front, as the server worded it.
    pub fn message(&self) -> &str {
        match self {
            ClientError::Invalid(m)
            | ClientError::NotFound(m)
            | ClientError::AlreadyExists(m)
            | ClientError::Unauthorized(m)
            | ClientError::FailedPrecondition(m)
            | ClientError::ResourceExhausted(m)
            | ClientError::Unavailable(m)
            | ClientError::Corrupt(m)
            | ClientError::Internal(m)
            | ClientError::Transport(m)
            | ClientError::Tls(m) => m,
        }
    }

    /// The one mapping from gRPC status codes to kinds.
    pub fn from_status(status: &tonic::Status) -> ClientError {
        use tonic::Code;
        let message = if status.message().is_empty() {
            // Some failures (a proxy, a dead connection) carry no message; the code is
            // then the best description there is.
            status.code().description().to_owned()
        } else {
            status.message().to_owned()
        };
        match status.code() {
            Code::InvalidArgument | Code::OutOfRange => ClientError::Invalid(message),
            Code::NotFound => ClientError::NotFound(message),
            Code::AlreadyExists => ClientError::AlreadyExists(message),
            Code::PermissionDenied | Code::Unauthenticated => ClientError::Unauthorized(message),
            Code::FailedPrecondition | Code::Aborted => ClientError::FailedPrecondition(message),
            Code::ResourceExhausted => ClientError::ResourceExhausted(message),
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => ClientError::Unavailable(message),
            Code::DataLoss => ClientError::Corrupt(message),
            Code::Unimplemented => {
                ClientError::Internal(format!("not implemented by this server: {message}"))
            }
            Code::Internal | Code::Unknown | Code::Ok => ClientError::Internal(message),
        }
    }

    /// A reply from the server that does not convert: the server broke the contract.
    pub(crate) fn corrupt_reply(what: &str, error: impl std::fmt::Display) -> ClientError {
        ClientError::Corrupt(format!("the server's {what} reply is malformed: {error}"))
    }
}

impl From<tonic::Status> for ClientError {
    fn from(status: tonic::Status) -> Self {
        // A call that failed in the transport (a lazy connection that could not connect,
        // a TLS 1.3 server refusing the client's certificate after the handshake) carries
        // the transport's error as the status's source; replies from the server do not.
        let Some(source) = status.source() else { return ClientError::from_status(&status) };
        match from_connection_error_including(source) {
            Some(ClientError::Tls(message)) => ClientError::Tls(message),
            Some(ClientError::Transport(causes)) if causes.contains(PLAINTEXT_HINT) => {
                // The kind the status code says, with the hint of what may be wrong.
                let kind = ClientError::from_status(&status);
                let message = format!("{}: {causes}", kind.message());
                kind.with_message(message)
            }
            _ => ClientError::from_status(&status),
        }
    }
}

/// What a closed or garbled connection may mean.
const PLAINTEXT_HINT: &str = "a replica that serves TLS closes plaintext connections: if it does, call it \
                              with https:// or give --tls-ca";

impl ClientError {
    /// The same kind with another message.
    fn with_message(self, message: String) -> ClientError {
        match self {
            ClientError::Invalid(_) => ClientError::Invalid(message),
            ClientError::NotFound(_) => ClientError::NotFound(message),
            ClientError::AlreadyExists(_) => ClientError::AlreadyExists(message),
            ClientError::Unauthorized(_) => ClientError::Unauthorized(message),
            ClientError::FailedPrecondition(_) => ClientError::FailedPrecondition(message),
            ClientError::ResourceExhausted(_) => ClientError::ResourceExhausted(message),
            ClientError::Unavailable(_) => ClientError::Unavailable(message),
            ClientError::Corrupt(_) => ClientError::Corrupt(message),
            ClientError::Internal(_) => ClientError::Internal(message),
            ClientError::Transport(_) => ClientError::Transport(message),
            ClientError::Tls(_) => ClientError::Tls(message),
        }
    }
}

/// [`from_connection_error`] looking at `error` itself too.
fn from_connection_error_including(error: &(dyn std::error::Error + 'static)) -> Option<ClientError> {
    tls_error(error).map(ClientError::Tls).or_else(|| from_connection_error(error))
}

impl From<tonic::transport::Error> for ClientError {
    fn from(error: tonic::transport::Error) -> Self {
        from_connection_error(&error).unwrap_or_else(|| ClientError::Transport(error.to_string()))
    }
}

/// A failed connection, from the error's source chain: TLS failures become
/// [`ClientError::Tls`] with what to check, the rest [`ClientError::Transport`] with the
/// causes (the transport error's own message is only "transport error"; the cause is
/// further down, where hyper tends to repeat one message at two levels). `None` when the
/// chain holds no cause.
fn from_connection_error(error: &(dyn std::error::Error + 'static)) -> Option<ClientError> {
    let mut causes: Vec<String> = Vec::new();
    let mut source = error.source();
    while let Some(cause) = source {
        if let Some(tls) = tls_error(cause) {
            return Some(ClientError::Tls(tls));
        }
        let text = cause.to_string();
        if causes.last() != Some(&text) {
            causes.push(text);
        }
        source = cause.source();
    }
    if causes.is_empty() {
        return None;
    }
    let joined = causes.join(": ");
    // A TLS listener closes a plaintext connection during its handshake; what the
    // client then sees is a closed connection or an HTTP/2 protocol error, with nothing
    // saying why.
    if !joined.contains("refused")
        && (joined.contains("connection closed")
            || joined.contains("reset by peer")
            || joined.contains("broken pipe")
            || joined.contains("http2 error"))
    {
        return Some(ClientError::Transport(format!("{joined} ({PLAINTEXT_HINT})")));
    }
    Some(ClientError::Transport(joined))
}

/// What went wrong in TLS, worded for the person who must fix it, if `cause` is a TLS
/// failure. Read from the cause's text: the TLS error reaches here inside an `io::Error`
/// whose inner error is only its message (rustls's wording: "invalid peer certificate:
/// ...", "received fatal alert: ...", "received corrupt message ...").
fn tls_error(cause: &(dyn std::error::Error + 'static)) -> Option<String> {
    let text = cause.to_string();
    tls_advice(&text).map(|advice| format!("{advice} ({text})"))
}

/// The advice for a TLS error message, or `None` if it is not one.
fn tls_advice(text: &str) -> Option<&'static str> {
    let lower = text.to_ascii_lowercase();
    if let Some(what) = lower.strip_prefix("invalid peer certificate: ") {
        return Some(if what.contains("unknownissuer") || what.contains("badsignature") {
            "the replica's certificate is not signed by a CA this client trusts: check that --tls-ca \
             (PLAIT_TLS_CA) names the cluster's CA"
        } else if what.contains("notvalidyet") || what.contains("not valid yet") {
            "the replica's certificate is not valid yet (or this machine's clock is wrong)"
        } else if what.contains("expired") {
            "the replica's certificate has expired (or this machine's clock is wrong): renew it"
        } else if what.contains("notvalidforname") || what.contains("not valid for name") {
            "the replica's certificate is not valid for the name or IP in the address: call it by a \
             name its certificate lists, or give --tls-server-name"
        } else {
            "the replica's certificate was refused"
        });
    }
    if let Some(alert) = lower.strip_prefix("received fatal alert: ") {
        return Some(match alert {
            "certificaterequired" => {
                "the replica requires a client certificate: give --cert and --key (PLAIT_CERT, PLAIT_KEY)"
            }
            "certificateexpired" => {
                "the replica refused this client's certificate: it has expired (or a clock is wrong)"
            }
            "badcertificate"
            | "unknownca"
            | "certificateunknown"
            | "decrypterror"
            | "unsupportedcertificate" => {
                "the replica refused this client's certificate: is it issued by the cluster's CA, for \
                 client use, and still valid?"
            }
            _ => "the replica ended the TLS handshake",
        });
    }
    if lower.starts_with("received corrupt message") {
        return Some("the replica did not answer in TLS: if it serves plaintext, call it with http://");
    }
    None
}

impl From<ConversionError> for ClientError {
    /// Conversions the client runs are on the server's replies, so a failure is the
    /// server's: `Corrupt`.
    fn from(error: ConversionError) -> Self {
        ClientError::Corrupt(format!("the server's reply is malformed: {error}"))
    }
}

#[cfg(test)]
mod tests {
    use tonic::{Code, Status};

    use super::*;

    /// Every status code lands in the kind its retry advice belongs to, and the server's
    /// message is kept word for word.
    #[test]
    fn status_codes_map_to_kinds() {
        let cases = [
            (Code::InvalidArgument, "Invalid", false),
            (Code::OutOfRange, "Invalid", false),
            (Code::NotFound, "NotFound", false),
            (Code::AlreadyExists, "AlreadyExists", false),
            (Code::PermissionDenied, "Unauthorized", false),
            (Code::Unauthenticated, "Unauthorized", false),
            (Code::FailedPrecondition, "FailedPrecondition", false),
            (Code::Aborted, "FailedPrecondition", false),
            (Code::ResourceExhausted, "ResourceExhausted", true),
            (Code::Unavailable, "Unavailable", true),
            (Code::DeadlineExceeded, "Unavailable", true),
            (Code::Cancelled, "Unavailable", true),
            (Code::DataLoss, "Corrupt", false),
            (Code::Internal, "Internal", false),
            (Code::Unknown, "Internal", false),
            (Code::Unimplemented, "Internal", false),
        ];
        for (code, kind, retryable) in cases {
            let error = ClientError::from(Status::new(code, "log 'chat' has no key 'x'"));
            let debug = format!("{error:?}");
            assert!(debug.starts_with(kind), "{code:?} became {debug}");
            assert_eq!(error.is_retryable(), retryable, "{code:?}");
            assert!(error.message().ends_with("log 'chat' has no key 'x'"), "{code:?}: {error}");
        }
    }

    /// The Display form puts the kind before the server's message.
    #[test]
    fn display_names_the_kind() {
        let error = ClientError::from(Status::not_found("no log named 'chat'"));
        assert_eq!(error.to_string(), "not found: no log named 'chat'");
        let error = ClientError::from(Status::invalid_argument("key must not be empty"));
        assert_eq!(error.to_string(), "invalid request: key must not be empty");
    }

    /// A status without a message still says something useful.
    #[test]
    fn empty_message_falls_back_to_the_code() {
        let error = ClientError::from(Status::unavailable(""));
        assert_eq!(error.message(), Code::Unavailable.description());
    }

    /// rustls's messages become advice on what to fix; other messages are not TLS.
    #[test]
    fn tls_messages_become_advice() {
        let cases = [
            ("invalid peer certificate: UnknownIssuer", "not signed by a CA this client trusts"),
            ("invalid peer certificate: certificate expired: verification time 5 > 4", "has expired"),
            ("invalid peer certificate: NotValidYet", "not valid yet"),
            ("invalid peer certificate: NotValidForName", "not valid for the name"),
            ("received fatal alert: CertificateRequired", "requires a client certificate"),
            ("received fatal alert: DecryptError", "refused this client's certificate"),
            ("received fatal alert: CertificateExpired", "it has expired"),
            ("received corrupt message of type InvalidContentType", "did not answer in TLS"),
        ];
        for (message, advice) in cases {
            let got = tls_advice(message).unwrap_or_else(|| panic!("{message} is TLS"));
            assert!(got.contains(advice), "{message}: {got}");
        }
        assert_eq!(tls_advice("connection refused"), None);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, "received fatal alert: UnknownCA");
        let status = tonic::Status::from_error(Box::new(io));
        // A status whose source is a TLS failure is a Tls error, whatever its code.
        assert!(matches!(ClientError::from(status), ClientError::Tls(_)));
    }

    /// A malformed reply is the server's fault and is reported as corrupt.
    #[test]
    fn conversion_errors_are_corrupt_replies() {
        let conversion = plait_proto::convert::log_id("log_id", &[1, 2, 3]).unwrap_err();
        let error = ClientError::from(conversion);
        assert!(matches!(error, ClientError::Corrupt(_)));
        assert_eq!(
            error.to_string(),
            "corrupt: the server's reply is malformed: log_id must be 32 bytes (a blake3 log id), got 3"
        );
    }
}
